"""Issue 18: the clustered broker (docs/cluster.md) under real faults. A three-node RabbitMQ
cluster started here on free ports, two companion replicas as their own processes consuming its
quorum queue into one PostgreSQL, a fleet publishing QoS 1 over MQTT with the list of nodes to
fail over between, and two managers subscribed to their site's alerts on two other nodes.

Every run counts exactly: every event the broker confirmed is stored once (0 lost, 0 duplicated
rows), every call_manager opens one alert and each manager receives each alert once. Figures
are printed (pytest -s)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from calmcue.shared.cluster import RabbitCluster
from companion import cluster_faults

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    c = cluster_faults.cluster_for_faults(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine

    name = f"cluster_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def _report(name: str, figures: dict) -> None:
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def _exactly_once(f: dict) -> None:
    assert f["faulted"] == 1, f
    assert f["stored"] == f["published"], f
    assert (f["lost"], f["duplicated"], f["unexpected"], f["dead_lettered"]) == (0, 0, 0, 0), f
    assert f["alerts_opened"] == f["alerts_expected"] > 0 and f["alerts_devices_ok"] == 1, f
    for m in ("manager-1", "manager-2"):  # on nodes 2 and 3
        assert (f[f"{m}_missed"], f[f"{m}_repeated"], f[f"{m}_unknown"]) == (0, 0, 0), f


def test_the_cluster_runs_three_nodes_with_the_queue_on_each(cluster):
    assert len(cluster.running_nodes()) == 3
    assert len(cluster.mqtt_tracker_members()) == 3  # losing one node leaves a majority
    listing = cluster.ctl(0, "list_queues", "name", "type", "members")
    line = next(ln for ln in listing.splitlines() if ln.startswith("calmcue.ingest"))
    assert "quorum" in line and all(n.name in line for n in cluster.nodes), line


def test_a_broker_node_killed_mid_stream_loses_nothing(cluster, pg_db, tmp_path: Path):
    f = cluster_faults.kill_node_mid_stream(cluster, pg_db, tmp_path, n=3000, rate=400)
    _report("broker node killed", f)
    _exactly_once(f)
    assert len(set(f["fleet_nodes_used"])) >= 2  # the fleet failed over to another node
    assert all(s > 0 for s in f["replica_stored"]), f  # both replicas shared the queue


def test_a_replica_killed_mid_stream_loses_nothing(cluster, pg_db, tmp_path: Path):
    f = cluster_faults.kill_replica_mid_stream(cluster, pg_db, tmp_path, n=3000, rate=400)
    _report("replica killed", f)
    _exactly_once(f)


def test_everything_restarted_at_once_loses_nothing(cluster, pg_db, tmp_path: Path):
    f = cluster_faults.restart_everything(cluster, pg_db, tmp_path, n=3000, rate=400)
    _report("everything restarted", f)
    _exactly_once(f)
    assert len(cluster.running_nodes()) == 3
