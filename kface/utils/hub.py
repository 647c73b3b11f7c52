"""The Hugging Face Hub: the one rule for "is this a Hub id?", offline mode, and pushing kface artefacts
(checkpoints, datasets' cards, metric cards)."""

import os
from pathlib import Path

from .errors import KfaceError


def is_hub_id(source) -> bool:
    """True when ``source`` names a Hub repo rather than a local path: it does not exist here, is not written as a
    path (``.``, ``/``, ``~``), and has the Hub's ``owner/name`` shape. A missing local folder is therefore
    reported as missing, not sent to the network."""
    text = str(source)
    return (not Path(text).expanduser().exists() and not text.startswith((".", "/", "~"))
            and text.count("/") == 1 and all(text.split("/")))


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it at import, or as set since (tests and scripts set it late)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def require_repo_id(push_to_hub: bool, repo_id: str | None, flag: str) -> None:
    """Fail before any work when --push_to_hub lacks its repo id."""
    if push_to_hub and not repo_id:
        raise KfaceError(f"--push_to_hub needs {flag} user/name")


def push_folder(folder, repo_id: str, token: str | None = None, private: bool = False,
                repo_type: str = "model", commit_message: str = "Upload with kface",
                ignore_patterns: list[str] | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(repo_id, token=token, private=private, repo_type=repo_type, exist_ok=True)
        info = upload_folder(repo_id=repo_id, folder_path=str(Path(folder)), token=token, repo_type=repo_type,
                             commit_message=commit_message,
                             ignore_patterns=ignore_patterns or ["checkpoint-*", "*.incomplete", "logs/*"])
    except Exception as err:
        raise KfaceError(
            f"pushing {folder} to the Hub repo {repo_id} failed ({type(err).__name__}: {err}); "
            "check your login (HF_TOKEN or huggingface-cli login), the network and HF_HUB_OFFLINE"
        ) from None
    return str(getattr(info, "commit_url", info))


def licence_text(license: str, dataset: str, script: str) -> str:
    """The card's licence paragraph: weights inherit their training data's terms, which only the trainer knows."""
    if license == "other":
        return (f"Not stated. These weights are derived from `{dataset}`, and their terms follow from that data's "
                f"licence, which only the person who trained them can state (kface's `{script} --license ID`, "
                "e.g. `cc-by-nc-4.0`).")
    return (f"`{license}`, as stated by the person who trained it (`{script} --license`); check that it fits the "
            f"terms of the training data, `{dataset}`.")
