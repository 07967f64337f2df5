"""README's example test for the pytest plugin, verbatim between the markers (checked by
tests/test_readme_example.py): run in the project's own suite with the plugin's fixtures."""

# --- README example start
from hvlib import Ready


def test_a_kit_container_runs_a_command(hvlib_kit_container):
    assert hvlib_kit_container.exec(["echo", "hello"]).text == "hello\n"


def test_debian_container_boots_systemd(hvlib_debian_container):
    ready = hvlib_debian_container.wait_ready(probe=Ready.SYSTEMD)
    assert ready.status in ("running", "degraded"), ready.failed_units
    assert hvlib_debian_container.exec("systemctl is-active dbus").text == "active\n"


# --- README example end
