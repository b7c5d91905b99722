"""The local Ray the engine starts (demo, tests, `--engine ray` without an address) stays on loopback."""

from __future__ import annotations

from egocurate.jobs.runners.loopback import beyond_loopback, listening


def test_local_ray_services_listen_on_loopback_only(ray_engine):
    sockets = listening(marker="ray")
    names = {name for _, _, name in sockets}
    assert {"gcs_server", "raylet"} <= names, f"the Ray services were not found: {sockets}"
    assert beyond_loopback(sockets) == [], sockets


def test_wildcard_and_routable_addresses_count_as_beyond_loopback():
    sockets = [("::", 1, "raylet"), ("0.0.0.0", 2, "gcs_server"), ("192.0.2.2", 3, "agent"),
               ("127.0.0.1", 4, "raylet"), ("::ffff:127.0.0.1", 5, "python"),
               ("::1", 6, "python")]  # fmt: skip
    assert beyond_loopback(sockets) == sockets[:3]
