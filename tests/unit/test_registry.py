"""The pull path without root: the registry's config and commands, its absence reported (exit 2), and the
client's push and pull against the real docker-registry on loopback (skipped where it is not installed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import tarfile
from pathlib import Path

import pytest
import yaml

from testbed import doctor, proc
from testbed.replication import registry, registry_client
from testbed.replication.imagedist import Shipment


def test_config_serves_files_under_the_run_on_the_hosts_address() -> None:
    cfg = yaml.safe_load(registry.config_text(Path("/tmp/tbab12registry/storage"), "10.0.0.254:47900"))
    assert cfg["storage"]["filesystem"]["rootdirectory"] == "/tmp/tbab12registry/storage"
    assert cfg["http"]["addr"] == "10.0.0.254:47900"
    assert "auth" not in cfg and cfg["version"] == 0.1


def test_the_client_runs_in_the_hosts_network_namespace() -> None:
    argv = registry.client_argv(4242, ["pull", "http://10.0.0.254:47900", "testbed/echo", "latest", Path("/x")])
    assert argv[:4] == ["nsenter", "-t", "4242", "-n"] and argv[5] == "-u"
    assert argv[6] == str(registry.CLIENT) and argv[7:] == ["pull", "http://10.0.0.254:47900", "testbed/echo",
                                                             "latest", "/x"]


@pytest.mark.parametrize("image, want", [("testbed/echo", ("testbed/echo", "latest")),
                                         ("testbed/echo:v2", ("testbed/echo", "v2")),
                                         ("127.0.0.1:5000/echo", ("127.0.0.1:5000/echo", "latest"))])
def test_repository_and_tag(image: str, want: tuple[str, str]) -> None:
    assert registry.repo_tag(image) == want


def test_a_missing_registry_is_reported_not_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "which", lambda name: None)
    assert registry.probe() == (False, "docker-registry is not installed")
    assert doctor.probe_registry()[0] is False
    with pytest.raises(registry.RegistryUnavailable) as err:
        registry.require()
    assert err.value.exit_code == 2 and "registry unavailable" in str(err.value)
    with pytest.raises(registry.RegistryUnavailable):  # before anything is made: no ledger, no Testbed used
        registry.pull(object(), "testbed/echo", "ha", "hb", Path("/nonexistent"))


def test_a_pull_shipment_reports_its_path_requests_and_setup() -> None:
    s = Shipment("testbed/echo", 10, path="pull", requests=6, setup_s={"push": 1.0})
    assert s.to_dict()["path"] == "pull" and s.to_dict()["setup_s"] == {"push": 1.0}


def _saved_image(path: Path) -> tuple[bytes, bytes]:
    """A minimal `docker save` archive: one layer holding one file; (layer tar, config)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"hello from a layer\n" * 1000
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = layer.getvalue()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
                         "architecture": "amd64", "os": "linux", "config": {}}).encode()
    chex = hashlib.sha256(config).hexdigest()
    with tarfile.open(path, "w") as t:
        for name, body in ((f"{chex}.json", config), ("l1/layer.tar", raw), ("manifest.json", json.dumps(
                [{"Config": f"{chex}.json", "RepoTags": ["tiny:latest"], "Layers": ["l1/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return raw, config


@pytest.mark.skipif(proc.which("docker-registry") is None, reason="docker-registry is not installed")
def test_push_then_pull_through_the_real_registry_gives_a_loadable_archive(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "config.yml"
    cfg.write_text(registry.config_text(tmp_path / "storage", f"127.0.0.1:{port}"))
    server = proc.spawn([proc.which("docker-registry"), "serve", str(cfg)], output=tmp_path / "registry.log")
    url = f"http://127.0.0.1:{port}"
    try:
        assert registry_client.wait(url, 20)["ready"] >= 0
        raw, config = _saved_image(tmp_path / "saved.tar")
        pushed = registry_client.push(url, "tiny", "latest", str(tmp_path / "saved.tar"))
        assert pushed["blobs"] == 2 and pushed["pushed"] == pushed["blob_bytes"] > len(config)
        again = registry_client.push(url, "tiny", "latest", str(tmp_path / "saved.tar"))
        assert again["pushed"] == 0  # blobs the registry has are not sent again
        got = registry_client.pull(url, "tiny", "latest", str(tmp_path / "pulled.tar"), "tiny:latest")
        # every body counted: /v2/, the manifest, the config and the layer (4 requests: one connection)
        assert got == {"bytes": pushed["blob_bytes"] + _small_bodies(url), "blobs": 2, "requests": 4}
        with tarfile.open(tmp_path / "pulled.tar") as t:
            entry = json.load(t.extractfile("manifest.json"))[0]
            assert entry["RepoTags"] == ["tiny:latest"]
            assert t.extractfile(entry["Config"]).read() == config
            assert gzip.decompress(t.extractfile(entry["Layers"][0]).read()) == raw  # docker load inflates it
        with pytest.raises(SystemExit, match="HTTP 404"):
            registry_client.pull(url, "tiny", "nosuchtag", str(tmp_path / "none.tar"), "tiny:nosuchtag")
    finally:
        proc.stop(server)
    assert server.returncode is not None


def _small_bodies(url: str) -> int:
    """Bytes of the /v2/ answer and of the image's manifest."""
    c = registry_client.Client(url)
    c.read_all(c.request("GET", "/v2/"))
    c.read_all(c.request("GET", "/v2/tiny/manifests/latest", headers={"Accept": registry_client.MANIFEST_V2}))
    return c.received


def test_fig5_asking_for_the_pull_path_without_a_registry_exits_2_and_makes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("farris_fig5", Path(__file__).parents[2] / "experiments"
                                                  / "farris_fig5.py")
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    monkeypatch.setattr(proc, "which", lambda name: None)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["farris_fig5.py", "--paths", "save,pull", "--out", str(out)])
    assert fig.main() == 2
    assert "registry unavailable" in capsys.readouterr().err and not out.exists()
