"""The PIMD driver's own logic, without running i-PI (the runs themselves are in test_quantum.py, marked slow)."""

import xml.etree.ElementTree as ET

from mlip_exafs.md import MdSettings
from mlip_exafs.pimd import PREFIX, ipi_input, newest_checkpoint, socket_name_for


def test_ipi_input_is_xml_with_the_settings_of_the_run():
    settings = MdSettings(temperature_k=250.0, timestep_fs=1.0, equilibration_fs=100, production_fs=200, snapshot_every_fs=10,
                          thermostat_time_fs=50.0, seed=4, nuclei="path-integral", beads=8)
    root = ET.fromstring(ipi_input(settings, 8, "mlipx-test", total_steps=300))
    assert root.find("system/initialize").get("nbeads") == "8"
    assert float(root.find("system/ensemble/temperature").text) == 250.0
    assert float(root.find("system/motion/dynamics/timestep").text) == 1.0
    assert root.find("total_steps").text == "300" and root.find("ffsocket/address").text == "mlipx-test"
    assert root.find("output/trajectory").get("stride") == "10"  # every 10 fs at 1 fs per step


def test_newest_complete_checkpoint_wins_and_a_cut_one_is_skipped(tmp_path):
    assert newest_checkpoint(tmp_path) is None
    (tmp_path / f"{PREFIX}.chk_1").write_text("<simulation><step>100</step></simulation>\n")
    (tmp_path / f"{PREFIX}.chk_2").write_text("<simulation><step>200</step></simulation>\n")
    (tmp_path / f"{PREFIX}.chk_3").write_text("<simulation><step>300</step>")  # cut short by a kill
    assert newest_checkpoint(tmp_path) == (tmp_path / f"{PREFIX}.chk_2", 200)


def test_socket_names_are_short_and_differ_between_run_folders(tmp_path):
    names = {socket_name_for(tmp_path / f"run-{'x' * 200}-{i}") for i in range(2)}
    assert len(names) == 2 and all(len(n) < 40 for n in names)


def test_given_beads_stand_where_the_rule_would_ask_too_many():
    """At 1 K the rule asks more beads than it allows; a run given its beads records the rule as None, not an error."""
    from mlip_exafs.pimd import _rule_beads
    from mlip_exafs.quantum import bead_count

    omega = 0.03  # rad/fs, ≈ 4.8 THz: W's stiffest CHGNet mode
    assert _rule_beads(omega, 300.0) == bead_count(omega, 300.0)
    assert _rule_beads(omega, 0.5) is None


def test_a_socket_bound_but_not_yet_listening_is_retried_not_fatal(tmp_path):
    """i-PI's socket file appears at bind(), before listen(): a connect in between is refused (the race a review
    suspected). The client retries until i-PI listens."""
    import os
    import socket
    import threading
    import time
    from pathlib import Path

    from mlip_exafs.pimd import _connect

    name = socket_name_for(tmp_path)
    path = Path(f"/tmp/ipi_{name}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))  # the file exists; connecting now is refused
    try:
        refused = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            refused.connect(str(path))
            raise AssertionError("a bound socket that does not listen should refuse")
        except ConnectionRefusedError:
            pass
        finally:
            refused.close()
        threading.Timer(0.3, server.listen, args=(1,)).start()

        class Running:  # i-PI still running
            def poll(self):
                return None

        started = time.monotonic()
        client = _connect(Running(), name, path, tmp_path)
        assert time.monotonic() - started >= 0.25
        client.close()
    finally:
        server.close()
        os.unlink(path)
