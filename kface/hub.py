"""Pushing kface artefacts (checkpoints, datasets' cards, metric cards) to the Hugging Face Hub."""

from pathlib import Path

from .errors import KfaceError


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
