"""Every shipped config resolves and validates against its task's schema; overlays hold only what
differs from their base; tools/rebuild_embedded.sh parses, each of its training commands validates,
and every model a command starts from is made by an earlier command (never data/embedded)."""

from __future__ import annotations

import contextlib
import io
import shlex
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from videomv.train.config import load_config, read_layers
from videomv.train.schema import MultiViewConfig, ReconConfig, VAEConfig
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "rebuild_embedded.sh"
SCHEMAS = {"train_mv.py": MultiViewConfig, "train_recon.py": ReconConfig, "train_vae.py": VAEConfig}


def schema_for(config: Path):
    name = config.name
    return ReconConfig if "recon" in name else VAEConfig if "vae" in name else MultiViewConfig


CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_resolves_and_validates(config):
    cfg = load_config(config, [], schema_for(config))
    assert cfg.max_steps >= 1 and cfg.output_dir.startswith("runs/")
    for key in ("base", "vae.path", "unet.pretrained", "text_encoder.base", "image_encoder.base"):
        value = OmegaConf.select(cfg, key, default=None)
        assert not str(value or "").startswith("data/embedded/") or key == "vae.path", (key, value)
    layers = read_layers(config)
    if len(layers) > 1:  # an overlay: short, and every key it sets changes something
        own = OmegaConf.to_container(layers[-1])
        assert len(config.read_text().splitlines()) < 30
        parent = OmegaConf.merge(*layers[:-1])
        same = [k for k, v in _flat(own).items() if OmegaConf.select(parent, k, default="<absent>") == v]
        assert not same, f"{config.name} repeats its base: {same}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_toy_configs_default_to_the_shipped_vae():
    for name in ("toy_t2mv.yaml", "toy_i2mv.yaml"):
        path = load_config(REPO / "configs" / name, [], MultiViewConfig).vae.path
        assert path == "data/embedded/t2mv/vae" and (REPO / path / "config.json").is_file()


def tool_help(name: str) -> str:
    """A tool's ``--help`` text, from its own argument parser (in this process: no second start-up)."""
    module = load_script(f"tools/{name}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    return out.getvalue()


def commands() -> list[list[str]]:
    """The script's commands, continuation lines joined, ``$OUT`` / ``$VAE`` substituted."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    values = {"OUT": "runs/embedded", "VAE": "runs/toy_vae_backgrounds/vae"}
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line.startswith("python "):
            continue
        for name, value in values.items():
            line = line.replace(f'"${name}"', value).replace(f"${name}", value)
        out.append(shlex.split(line))
    return out


def test_rebuild_script_parses_and_each_run_starts_from_an_earlier_one():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    cmds = commands()
    assert len(cmds) > 20
    export_help = tool_help("export_embedded.py")
    made: list[str] = []
    finals: dict[str, str] = {}

    def check_source(value, what):
        if value in (None, ""):
            return
        value = str(value)
        assert not value.startswith("data/embedded"), (what, value)
        if value.startswith("runs/"):
            assert any(value == m or value.startswith(m + "/") for m in made), f"{what}={value} is not made earlier"

    for cmd in cmds:
        tool = Path(cmd[1]).name
        if tool in SCHEMAS:
            assert cmd[2] == "--config"
            cfg = load_config(REPO / cmd[3], cmd[4:], SCHEMAS[tool])  # types, ranges, unknown keys
            for key in ("base", "vae.path", "unet.pretrained", "text_encoder.base", "image_encoder.base",
                        "generator.path", "reconstructor.init_from"):
                check_source(OmegaConf.select(cfg, key, default=None), key)
            if cfg.get("resume"):
                assert cfg.output_dir in finals, f"resume=latest in {cfg.output_dir}, which no earlier run used"
            finals[cfg.output_dir] = tool
            made.extend([f"{cfg.output_dir}/final", f"{cfg.output_dir}/vae", f"{cfg.output_dir}/reconstructor"])
        else:
            assert tool == "export_embedded.py", cmd
            flags = [a for a in cmd[2:] if a.startswith("--")]
            for flag in flags:
                assert flag in export_help, f"export_embedded.py has no {flag}"
            args = dict(zip(cmd[2::2], cmd[3::2]))
            for flag in ("--pipeline", "--vae", "--reconstructor", "--share-with"):
                check_source(args.get(flag), flag)
            made.append(args["--out"])
    assert "runs/embedded/t2mv" in made and "runs/embedded/i2mv" in made
