"""`recops federated ...` refuses bad flags with one clear line and exit code 2, before any work."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli_text


@pytest.mark.parametrize("flags, words", [
    (["--clients", "1"], "federated.num_clients"),
    (["--strategy", "fedsgd"], "federated.strategy"),
    (["--fraction", "0"], "federated.fraction_train"),
    (["--partition", "shards"], "federated.partition"),
    (["--client-dp", "fixed", "--noise", "0"], "without noise"),
    (["--strategy", "fedavgm", "--server-momentum", "1.0"], "federated.server_momentum"),
    (["--strategy", "fedadam", "--server-lr", "-1"], "federated.server_lr"),
    (["--client-optimizer", "lbfgs"], "federated.client_optimizer"),
    (["--client-lr", "-0.1"], "federated.client_lr"),
    (["--clients", "4", "--min-clients", "5"], "more than the 4 clients"),
    (["--engine", "nowhere"], "federated.engine"),
    (["--secure-aggregation", "--secagg-shares", "3", "--secagg-threshold", "3"],
     "must be below"),
    (["--secure-aggregation", "--clients", "4", "--secagg-shares", "5",
      "--secagg-threshold", "3"], "more than the 4 clients sampled"),
    (["--secure-aggregation", "--secagg-clip", "0"], "federated.secagg_clipping_range"),
    (["--secure-aggregation", "--client-dp", "adaptive"], "does not combine"),
    (["--users-as-clients", "--engine", "deployment"], "virtual clients"),
    (["--engine", "deployment", "--superlink-address", "flower-superlink"], "not host:port"),
    (["--engine", "deployment", "--superlink-address", "link:99999"], "not host:port"),
    (["--superlink-address", "link:9093"], "is for federated.engine 'deployment'"),
    (["--engine", "deployment", "--superlink-address", "link:9093", "--secure-aggregation"],
     "do not tell the server"),
    (["--engine", "deployment", "--superlink-insecure", "--superlink-root-certificates",
      "/x/ca.crt"], "exclude each other"),
    (["--certificate-hosts", " , "], "federated.certificate_hosts"),
    (["--certificate-hosts", "link;rm"], "neither a host name"),
])
def test_bad_flags_give_one_line_and_exit_2(monkeypatch, capsys, home, flags, words) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "federated", *flags)
    assert code == 2
    assert words in text
    assert "Traceback" not in text
    assert not (home / "runs").exists()  # nothing started


def test_federated_on_an_empty_lake_says_what_to_do(monkeypatch, capsys, home) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "federated", "--engine", "deployment",
                              "--clients", "2")
    assert code == 2
    assert "holds no interactions" in text and "recops ingest" in text


def test_flower_certificates_are_issued_for_the_hosts_asked(monkeypatch, capsys, home,
                                                            tmp_path) -> None:
    from federated.deployment import certificate_hosts

    out = tmp_path / "certs"
    code, text = run_cli_text(monkeypatch, capsys, "flower-certificates", "--out", str(out),
                              "--certificate-hosts", "flower-superlink,10.0.0.9")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "server.key", "server.pem"]
    assert sorted(certificate_hosts(out / "server.pem")) == ["10.0.0.9", "flower-superlink"]
    assert "valid for flower-superlink, 10.0.0.9" in text


@pytest.mark.parametrize("args, words", [
    (["--certificate-hosts", "bad host"], "neither a host name"),
    (["--certificate-hosts", ","], "federated.certificate_hosts"),
])
def test_flower_certificates_refuse_bad_input(monkeypatch, capsys, home, tmp_path, args,
                                              words) -> None:
    code, text = run_cli_text(monkeypatch, capsys, "flower-certificates", "--out",
                              str(tmp_path / "certs"), *args)
    assert code == 2 and words in text and "Traceback" not in text
    assert not (tmp_path / "certs").exists()
    (tmp_path / "file").write_text("x")
    code, text = run_cli_text(monkeypatch, capsys, "flower-certificates", "--out",
                              str(tmp_path / "file"))
    assert code == 2 and "is a file" in text
