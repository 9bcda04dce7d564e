"""SuperNodes with their own data: the ClientApp reads its node's data-path, the server writes
no client data, and the SuperLink certificate names the configured hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.common import arrays_from_model, run_config_from_settings
from federated.runner import prepare_run
from recops.errors import DataError
from tests.federated.test_client_app import _message


@pytest.fixture(scope="module")
def silos():
    """Synthetic events split by user: the server's third and two clients' thirds."""
    from recops.data.synthetic import generate

    t = generate(n_users=150, n_items=80, n_interactions=4500, n_clusters=4, days=10, seed=3)
    users = sorted(t.interactions["user_id"].unique())
    thirds = [set(users[i::3]) for i in range(3)]
    parts = [t.interactions[t.interactions["user_id"].isin(s)] for s in thirds]
    return t.items, parts


def _own_data_run(make_settings, silos, tmp_path: Path):
    from recops.training.sequences import SequenceData

    items, (server, *_) = silos
    s = make_settings(**{"federated.num_clients": 2, "federated.engine": "deployment",
                         "federated.superlink_address": "127.0.0.1:9093"})
    run_dir = tmp_path / "run"
    _, model, _ = prepare_run(s, SequenceData.from_interactions(server, items, 20), run_dir)
    return s, run_dir, model


def _context(settings, run_dir: Path, node_config: dict):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=2**63 + 5, node_config=node_config, state=RecordDict(),
                   run_config=run_config_from_settings(settings, run_dir))


def test_a_client_trains_on_its_own_folder_and_the_server_wrote_no_client_data(
        make_settings, silos, tmp_path) -> None:
    from federated.client_app import app
    from federated.partition import read_manifest

    s, run_dir, model = _own_data_run(make_settings, silos, tmp_path)
    # The server published only the public catalogue, its own validation set and a manifest.
    published = sorted(p.name for p in (run_dir / "partitions").iterdir())
    assert published == ["catalogue.pkl", "manifest.json", "server-valid.pkl"]
    manifest = read_manifest(run_dir)
    assert manifest["own_data"] and manifest["n_users"] == 0 and manifest["clients"] == []

    client_events = silos[1][1]
    folder = tmp_path / "silo-1"
    folder.mkdir()
    client_events.to_parquet(folder / "interactions.parquet")
    ctx = _context(s, run_dir, {"data-path": str(folder)})
    reply = app(_message(arrays_from_model(model), "train"), ctx)
    assert not reply.has_error()
    m = reply.content["metrics"]
    assert m["num-examples"] == client_events["user_id"].nunique()
    assert 0 <= m["partition-id"] < 2**62  # the node id, as an int64 metric
    ev = app(_message(arrays_from_model(model), "evaluate"), ctx)
    assert ev.content["metrics"]["eval-users"] > 0


def _train(s, run_dir, model, node_config):
    from federated.client_app import app

    return app(_message(arrays_from_model(model), "train"), _context(s, run_dir, node_config))


def test_bad_client_folders_are_named(make_settings, silos, tmp_path) -> None:
    s, run_dir, model = _own_data_run(make_settings, silos, tmp_path)
    events = silos[1][1]
    with pytest.raises(DataError, match="is not a folder on this SuperNode"):
        _train(s, run_dir, model, {"data-path": str(tmp_path / "nowhere")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no interactions file"):
        _train(s, run_dir, model, {"data-path": str(empty)})
    two = tmp_path / "two"
    two.mkdir()
    events.to_parquet(two / "interactions.parquet")
    events.to_csv(two / "interactions.csv", index=False)
    with pytest.raises(DataError, match="more than one interactions file"):
        _train(s, run_dir, model, {"data-path": str(two)})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    bad = events.copy()
    bad.loc[bad.index[:3], "item_id"] = 10_000_001  # items the run's catalogue lacks
    bad.to_parquet(foreign / "interactions.parquet")
    with pytest.raises(DataError, match=r"3 row\(s\) name item ids not in the run's catalogue"):
        _train(s, run_dir, model, {"data-path": str(foreign)})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "interactions.csv").write_text("user_id,item_id\n1,oops\n")
    with pytest.raises(DataError, match="interactions.csv"):
        _train(s, run_dir, model, {"data-path": str(broken)})
    with pytest.raises(DataError, match="--node-config \"data-path="):
        _train(s, run_dir, model, {})


def test_certificates_name_the_configured_hosts(tmp_path) -> None:
    import ssl

    from federated.deployment import (
        CA_CERT,
        SERVER_CERT,
        SERVER_KEY,
        certificate_hosts,
        ensure_certificates,
    )

    certs = ensure_certificates(tmp_path, "flower-superlink,10.0.0.7,localhost")
    assert (certs.ca_cert.name, certs.server_cert.name, certs.server_key.name) == (
        CA_CERT, SERVER_CERT, SERVER_KEY) == ("ca.crt", "server.pem", "server.key")
    assert sorted(certificate_hosts(certs.server_cert)) == ["10.0.0.7", "flower-superlink",
                                                             "localhost"]
    assert certs.server_key.stat().st_mode & 0o077 == 0
    # The chain verifies for a configured name, and not for another one.
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certs.server_cert, certs.server_key)
    for host, ok in (("flower-superlink", True), ("elsewhere", False)):
        assert _handshake(ctx, server, host) is ok
    same = ensure_certificates(tmp_path, "localhost, flower-superlink,10.0.0.7")
    assert same.server_cert.read_bytes() == certs.server_cert.read_bytes()  # reused
    first = certs.server_cert.read_bytes()
    ensure_certificates(tmp_path, "superlink.example.org")
    assert certs.server_cert.read_bytes() != first
    assert certificate_hosts(certs.server_cert) == ["superlink.example.org"]


def _handshake(client: object, server: object, host: str) -> bool:
    """A TLS handshake over memory BIOs: does ``client`` accept ``server`` as ``host``?"""
    import ssl

    assert isinstance(client, ssl.SSLContext) and isinstance(server, ssl.SSLContext)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=host)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError:
                return False
            except ssl.SSLError:
                if side is s:
                    continue  # the server sees the client's alert
                raise
            peer_in.write(out.read())
        try:
            c.do_handshake()
            return True
        except ssl.SSLWantReadError:
            continue
        except ssl.SSLCertVerificationError:
            return False
    return False


def test_the_deployment_runner_points_flwr_at_the_configured_superlink(
        make_settings, tmp_path, monkeypatch) -> None:
    """What `flwr run` is told: the address and the CA of federated.superlink_*; no SuperLink or
    SuperNode is started (the processes are recorded, not run)."""
    import tomllib

    import federated.engines as engines
    from recops.errors import ConfigError

    started: list[list[str]] = []

    class Recorder:
        def __init__(self, env, log_dir) -> None:
            self.env = env

        def start(self, name, argv, what=None):
            started.append(list(argv))
            raise SystemExit  # stop before anything runs

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    monkeypatch.setattr(engines, "FlowerProcesses", Recorder)
    ca = tmp_path / "ca.crt"
    ca.write_text("PEM")
    s = make_settings(**{"federated.engine": "deployment",
                         "federated.superlink_address": "link.example.org:9093",
                         "federated.superlink_root_certificates": str(ca)})
    with pytest.raises(SystemExit):
        engines.run_deployment(s, tmp_path / "run", {"run-dir": "x"}, num_clients=2)
    assert [argv[:2] for argv in started] == [["flwr", "run"]]
    conf = tomllib.loads((engines.flwr_home(s, tmp_path / "run") / "config.toml").read_text())
    link = conf["superlink"][conf["superlink"]["default"]]
    assert link == {"address": "link.example.org:9093", "root-certificates": str(ca)}
    s.federated.superlink_root_certificates = str(tmp_path / "missing.crt")
    with pytest.raises(ConfigError, match="missing.crt is not a file"):
        engines.run_deployment(s, tmp_path / "run", {"run-dir": "x"}, num_clients=2)


def test_the_run_settings_every_supernode_reads_hold_no_secret(make_settings, silos,
                                                               tmp_path) -> None:
    from recops.training.sequences import SequenceData

    items, (server, *_) = silos
    s = make_settings(**{"federated.num_clients": 2, "stores.registry": "postgres",
                         "stores.postgres_dsn": "postgresql+psycopg://u:pw-4711@db:5432/recops",
                         "serving.auth_token": "token-0815"})
    run_dir = tmp_path / "run"
    prepare_run(s, SequenceData.from_interactions(server, items, 20), run_dir)
    text = (run_dir / "federated" / "settings.yaml").read_text()
    assert "pw-4711" not in text and "token-0815" not in text
    assert "num_clients: 2" in text  # the run's own settings are there
    assert s.stores.postgres_dsn is not None  # the caller's settings keep theirs
