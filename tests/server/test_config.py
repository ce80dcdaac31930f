"""Configuration as the rendered pods pass it (KAITOCTL_* variables), and KAITO's fallback convention."""

from __future__ import annotations

import importlib

import pytest

from kaitoctl_server.config import AdapterRef, ServerConfig
from kaitoctl_server.errors import ConfigError


def test_defaults_are_kaitos_paths_and_port():
    config = ServerConfig.from_env({})
    assert config.model_dir == "/workspace/tfs/weights"
    assert config.adapter_dir == "/mnt/adapter"
    assert config.bind == "0.0.0.0:5000"
    assert (config.dtype, config.pipeline, config.trust_remote_code, config.api_key) == (
        "auto", "text-generation", False, None)
    assert config.adapters is None  # no list given: KAITO's directory scan


def test_every_variable_is_read():
    config = ServerConfig.from_env({
        "KAITOCTL_MODEL": "/m", "KAITOCTL_DTYPE": "bfloat16", "KAITOCTL_PIPELINE": "conversational",
        "KAITOCTL_TRUST_REMOTE_CODE": "true", "KAITOCTL_ADAPTER_DIR": "/ad",
        "KAITOCTL_ADAPTERS": '[{"name":"a","strength":0.2},{"name":"b","strength":"1.5"},{"name":"c"}]',
        "KAITOCTL_API_KEY": "k", "KAITOCTL_BIND": "127.0.0.1:6000", "KAITOCTL_MAX_TOKENS": "64",
        "KAITOCTL_ALLOW_PICKLED_ADAPTERS": "true", "KAITOCTL_MODEL_NAME": "falcon-7b", "KAITOCTL_DEVICE": "cpu",
    })
    assert config.model_dir == "/m" and config.dtype == "bfloat16" and config.pipeline == "chat"
    assert config.trust_remote_code and config.allow_pickled_adapters
    assert config.adapters == (AdapterRef("a", "/ad/a", 0.2), AdapterRef("b", "/ad/b", 1.5), AdapterRef("c", "/ad/c", 1.0))
    assert (config.api_key, config.bind, config.max_tokens, config.model_name, config.device) == (
        "k", "127.0.0.1:6000", 64, "falcon-7b", "cpu")


def test_empty_adapter_list_means_no_adapters_even_with_a_mounted_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "adapter_config.json").write_text("{}")
    config = ServerConfig.from_env({"KAITOCTL_ADAPTERS": "[]", "KAITOCTL_ADAPTER_DIR": str(tmp_path)})
    assert config.adapter_refs() == []


def test_kaito_fallback_scans_the_dir_with_strengths_from_env(tmp_path):
    for name in ("zeta", "alpha", "not-an-adapter"):
        (tmp_path / name).mkdir()
    (tmp_path / "zeta" / "adapter_config.json").write_text("{}")
    (tmp_path / "alpha" / "adapter_config.json").write_text("{}")
    config = ServerConfig.from_env({"KAITOCTL_ADAPTER_DIR": str(tmp_path), "zeta": "0.25"})
    assert config.adapter_refs() == [
        AdapterRef("alpha", str(tmp_path / "alpha"), 1.0),  # default strength
        AdapterRef("zeta", str(tmp_path / "zeta"), 0.25),
    ]


def test_kaito_fallback_with_a_bad_strength_names_the_variable(tmp_path):
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "adapter_config.json").write_text("{}")
    config = ServerConfig.from_env({"KAITOCTL_ADAPTER_DIR": str(tmp_path), "ad": "strong"})
    with pytest.raises(ConfigError, match="environment variable ad .*'strong'"):
        config.adapter_refs()


def test_no_adapter_dir_means_base_model(tmp_path):
    assert ServerConfig.from_env({"KAITOCTL_ADAPTER_DIR": str(tmp_path / "absent")}).adapter_refs() == []


@pytest.mark.parametrize("env,needle", [
    ({"KAITOCTL_ADAPTERS": "[{name: a}]"}, "KAITOCTL_ADAPTERS is not valid JSON"),
    ({"KAITOCTL_ADAPTERS": '{"name":"a"}'}, "must be a JSON list"),
    ({"KAITOCTL_ADAPTERS": '[{"name":"a"},{"name":"a"}]'}, "listed twice"),
    ({"KAITOCTL_ADAPTERS": '[{"name":"../etc"}]'}, "not a valid adapter name"),
    ({"KAITOCTL_ADAPTERS": '[{"name":"a","strength":"high"}]'}, r"KAITOCTL_ADAPTERS\[0\].strength"),
    ({"KAITOCTL_ADAPTERS": '[{"name":"a","strength":NaN}]'}, "finite"),
    ({"KAITOCTL_ADAPTERS": '[{"name":"a","weight":1}]'}, "unknown keys"),
    ({"KAITOCTL_DTYPE": "fp8"}, "KAITOCTL_DTYPE: 'fp8' is not one of"),
    ({"KAITOCTL_PIPELINE": "summarization"}, "KAITOCTL_PIPELINE"),
    ({"KAITOCTL_TRUST_REMOTE_CODE": "maybe"}, "KAITOCTL_TRUST_REMOTE_CODE: expected true or false"),
    ({"KAITOCTL_MAX_TOKENS": "lots"}, "KAITOCTL_MAX_TOKENS: expected an integer"),
])
def test_bad_values_say_which_variable_and_what_to_write(env, needle):
    with pytest.raises(ConfigError, match=needle):
        ServerConfig.from_env(env)


def test_gunicorn_config_avoids_preload_and_fork_pitfalls(monkeypatch):
    """One gthread worker, no preload (the model loads in the worker), bind from KAITOCTL_BIND."""
    monkeypatch.setenv("KAITOCTL_BIND", "127.0.0.1:7777")
    monkeypatch.setenv("KAITOCTL_THREADS", "300")
    import kaitoctl_server.gunicorn_conf as conf

    conf = importlib.reload(conf)
    assert conf.bind == ["127.0.0.1:7777"]
    assert (conf.workers, conf.worker_class, conf.threads, conf.preload_app) == (1, "gthread", 300, False)
    assert conf.timeout >= 60 and conf.graceful_timeout > 0
    monkeypatch.delenv("KAITOCTL_BIND")
    assert importlib.reload(conf).bind == ["0.0.0.0:5000"]


def test_gunicorn_threads_leave_room_for_probes_beyond_batch_and_queue(monkeypatch):
    """Every queued or running generation holds a thread: there must be spare ones for /health."""
    import kaitoctl_server.gunicorn_conf as conf

    monkeypatch.setenv("KAITOCTL_MAX_BATCH", "4")
    monkeypatch.setenv("KAITOCTL_MAX_QUEUE", "6")
    monkeypatch.setenv("KAITOCTL_THREADS", "3")  # too few: raised to the minimum
    assert importlib.reload(conf).threads == 4 + 6 + 8
    monkeypatch.delenv("KAITOCTL_THREADS")
    assert importlib.reload(conf).threads == ServerConfig.from_env({"KAITOCTL_MAX_BATCH": "4",
                                                                   "KAITOCTL_MAX_QUEUE": "6"}).min_threads
    monkeypatch.delenv("KAITOCTL_MAX_BATCH")
    monkeypatch.delenv("KAITOCTL_MAX_QUEUE")
    assert importlib.reload(conf).threads == ServerConfig().min_threads


@pytest.fixture()
def clean_env(monkeypatch):
    """Variables the entry point writes to os.environ are restored after the test."""
    for name in ("KAITOCTL_MODEL", "KAITOCTL_BIND", "KAITOCTL_ADAPTERS", "KAITOCTL_TRUST_REMOTE_CODE",
                 "KAITOCTL_DTYPE", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.setenv(name, "recorded")  # remembers the original value for teardown
        monkeypatch.delenv(name)
    return monkeypatch


def test_module_entry_point_flags_become_the_same_variables(clean_env):
    from kaitoctl_server import __main__ as entry

    started = []
    clean_env.setattr(entry, "_gunicorn", lambda load: started.append(load))
    code = entry.main(["--model", "/m", "--bind", "127.0.0.1:1234", "--adapters", '[{"name":"a"}]',
                       "--trust-remote-code"])
    assert code == 0 and started == [entry._load_main_app]
    config = ServerConfig.from_env()
    assert (config.model_dir, config.bind, config.trust_remote_code) == ("/m", "127.0.0.1:1234", True)
    assert config.adapters == (AdapterRef("a", "/mnt/adapter/a", 1.0),)


def test_module_entry_point_rejects_bad_values_before_starting(clean_env, capsys):
    from kaitoctl_server import __main__ as entry

    clean_env.setattr(entry, "_gunicorn", lambda load: pytest.fail("must not start"))
    assert entry.main(["--dtype", "fp4"]) == 2
    assert "KAITOCTL_DTYPE" in capsys.readouterr().err


def test_under_torchrun_other_ranks_follow_rank_zero(clean_env):
    from kaitoctl_server import __main__ as entry
    from kaitoctl_server import distributed

    followed = []
    clean_env.setattr(entry, "_gunicorn", lambda load: pytest.fail("only rank 0 runs gunicorn"))
    clean_env.setattr(distributed, "run_follower", lambda config, world: followed.append(world) or 0)
    for name, value in (("RANK", "2"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "4")):
        clean_env.setenv(name, value)
    assert entry.main([]) == 0
    assert followed == [distributed.World(rank=2, world_size=4, local_rank=0)]


def test_under_torchrun_a_rank_outside_the_world_is_refused(clean_env, capsys):
    from kaitoctl_server import __main__ as entry

    clean_env.setattr(entry, "_gunicorn", lambda load: pytest.fail("must not start"))
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "2")
    assert entry.main([]) == 2
    assert "RANK=2 is not below WORLD_SIZE=2" in capsys.readouterr().err


def test_standby_health_reports_rank_world_size_and_why_not():
    from kaitoctl_server.app import create_standby_app

    verdict = [(True, "")]
    client = create_standby_app(2, 4, lambda: verdict[0]).test_client()
    response = client.get("/health")
    assert (response.status_code, response.json) == (200, {"status": "Healthy", "rank": 2, "world_size": 4})
    verdict[0] = (False, "lost rank 0")
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json["detail"] == "lost rank 0"
    response = client.post("/chat", json={"prompt": "hi"})
    assert response.status_code == 404 and "rank 0" in response.json["detail"]
