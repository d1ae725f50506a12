"""Dataset-level analyses: integrated feature analysis (IFA)."""
