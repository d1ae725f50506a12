"""Every method has the name people write in papers and figures."""

import camscope
from camscope.engine.method import available_methods, display_name


def test_every_registered_method_has_a_display_name():
    missing = [name for name, cls in available_methods().items() if not cls.display_name]
    assert not missing, f"methods without a display_name: {missing}"


def test_display_names_follow_the_papers_spelling():
    assert display_name("gradcampp") == "Grad-CAM++"
    assert display_name("Grad-CAM") == "Grad-CAM"
    assert display_name(camscope.methods.GradCAM) == "Grad-CAM"
    assert display_name("finer-scorecam") == "Finer-CAM (Score-CAM)"
    assert display_name("not-a-method") == "not-a-method"
