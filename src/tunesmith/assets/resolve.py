"""Turn --model into something `from_pretrained` takes, refusing untrusted pickles and remote code."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import TunesmithError
from .registry import MODELS, model_path, unknown_model_message

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_model_source(name: str) -> str:
    """An embedded name -> its local folder; a folder -> itself; a tunesmith run folder -> its model (an adapter merged
    into its base, export.run_as_base_model); anything else is a hub name."""
    if name in MODELS:
        return str(model_path(name))
    path = Path(name).expanduser()
    if (path / "run.json").is_file():
        from ..export import run_as_base_model

        return str(run_as_base_model(path))
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise TunesmithError(f"'{name}' is not a Hugging Face model folder (no config.json in it); give a folder saved with save_pretrained, an embedded name, or a hub name.")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TunesmithError(f"The model folder '{name}' does not exist; check the path, or see `tunesmith models` for the embedded ones.")
    return name


def check_weight_files(source: str, trust_pickle: bool) -> None:
    """A local folder whose weights exist only as pickles loads only with --trust-pickle."""
    path = Path(source)
    if not path.is_dir():
        return
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not trust_pickle:
        raise TunesmithError(f"'{source}' holds its weights only as pickle files ({', '.join(pickles[:3])}), which can run code when loaded; "
                             f"convert them to safetensors, or pass --trust-pickle if you trust their origin.")


def load_pretrained(loader, source: str, model_cfg, **kwargs):
    """Call loader.from_pretrained with our safety settings, turning failures into one sentence.

    Remote code runs only with --trust-remote-code. Without --trust-pickle only safetensors
    weights load; with it, transformers reads .bin files with torch.load(weights_only=True)
    (its default, checked by tests/test_safety.py), so a pickle that holds code is still refused.
    """
    import pickle

    import transformers
    from safetensors import SafetensorError

    from . import efficientnet_lite  # noqa: F401  (registers its config and model with transformers' Auto classes)

    check_weight_files(source, model_cfg.trust_pickle)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    options = dict(trust_remote_code=model_cfg.trust_remote_code, **kwargs)
    if not model_cfg.trust_pickle:
        options["use_safetensors"] = True
    try:
        return loader.from_pretrained(source, **options)
    except pickle.UnpicklingError:
        raise TunesmithError(f"The pickled weights of '{source}' hold more than tensors (possibly code), so they were refused even with "
                             f"--trust-pickle; get the model as safetensors.") from None
    except SafetensorError as exc:
        raise TunesmithError(f"The weights of '{source}' are damaged ({exc}); download or save the model again.") from None
    except (OSError, ValueError, EnvironmentError) as exc:
        text = str(exc)
        if "trust_remote_code" in text:
            raise TunesmithError(f"Model '{source}' needs to run its own code; pass --trust-remote-code only if you trust its authors.") from None
        if Path(source).is_dir():
            raise TunesmithError(f"Could not load the model in '{source}' ({text.splitlines()[0] if text else type(exc).__name__}); check that it is a complete Hugging Face model folder.") from None
        raise TunesmithError(unknown_model_message(source)) from None
