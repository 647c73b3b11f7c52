"""Class names as folder names: the one check every place that turns a class name into a path goes through.

A class name becomes a folder in three places: preprocess.py exports a Hub dataset as ``<class>/<file>``
(and reads folder names back as class names), sample.py writes ``<samples>/<folder>/<seed>.png``, and
evaluate.py reads those folders from ``samples.json``. All of them call :func:`class_folder` (one name)
or :func:`class_folders` (all names of a dataset or model).

The policy is to **reject, not map**. The folder of a class is its name, verbatim, or an error:

- a mapped name (``a/b`` -> ``a_b``) needs a side table wherever a folder is read back as a class (preprocess
  reads labels from folder names), and two mapped names can meet in one folder;
- a name that needs mapping (``../../x``, a control character, an empty string) is a broken or hostile label,
  and the user should fix the labels once, at the source, rather than find a renamed class later.

Rejected: empty or blank names; ``.`` and ``..``, and any leading ``.`` (a hidden folder: scans skip it); ``/``, ``\\`` (a path, not a name; this covers absolute
paths) and a Windows drive prefix (``C:``); NUL and other control characters (Unicode category Cc);
names over 200 bytes of UTF-8 (a file name may have 255 on ext4, APFS, NTFS, and kface derives longer names
from a class name: the grid ``grids/<name>@<id>.png`` and its temporary ``.<name>@<id>.png.<random>.tmp``); and,
for a list, two names that one file system would make one folder: equal after NFKC normalisation and case
folding (``A``/``a`` on a case-insensitive file system; ``é`` composed and decomposed; ``ﬁ``/``fi``).

Every script that takes class names applies this one rule before any work: preprocess.py to its class folders
(or a Hub dataset's labels), the trainers and evaluate.py to the dataset's class names
(``kface.data.require_class_names``), sample.py to the model's. Names are drawn literally in every plot (no
mathtext), so any accepted name can be plotted.
"""

import unicodedata

MAX_NAME_BYTES = 255  # per path component on ext4, XFS, APFS, NTFS (in UTF-16 units there, never fewer)
# what a class name may use of that: kface's longest name made from it, a grid's temporary file
# ".<name>@<id>.png.<8 random>.tmp", adds 18 bytes and the id; 200 leaves room for any id and a margin
MAX_CLASS_NAME_BYTES = 200


class UnsafeName(ValueError):
    """A class name that cannot be a folder name; the message says which and why."""


def _why_unsafe(name) -> str | None:
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name.strip():
        return "is empty or blank"
    if name in (".", ".."):
        return "is a relative path component"
    if "/" in name or "\\" in name:
        return "contains a path separator (/ or \\)"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return "starts with a Windows drive prefix"
    bad = sorted({c for c in name if unicodedata.category(c) == "Cc"})
    if bad:
        return f"contains control character(s) {', '.join(f'U+{ord(c):04X}' for c in bad)}"
    if name.startswith("."):
        return "starts with '.' (a hidden folder, which folder scans skip)"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_CLASS_NAME_BYTES:
        return (f"is {size} bytes of UTF-8, over the {MAX_CLASS_NAME_BYTES}-byte limit of a class name (a file "
                f"name may have {MAX_NAME_BYTES}, and kface makes longer ones from it)")
    return None


def class_folder(name: str, class_id: int | None = None, reserved=frozenset()) -> str:
    """The folder of class ``name``: the name itself, or :class:`UnsafeName` saying why it cannot be one.

    ``reserved``: folder keys (:func:`folder_key`) the parent folder already uses for itself (a samples
    folder's ``grids``, ``dataset``); a class with such a name gets ``@<class_id>`` appended instead.
    """
    why = _why_unsafe(name)
    if why:
        raise UnsafeName(f"class name {name!r} {why}")
    if folder_key(name) in reserved:
        if class_id is None:
            raise UnsafeName(f"class name {name!r} is reserved here ({sorted(reserved)})")
        return f"{name}@{class_id}"
    return name


def folder_key(folder: str) -> str:
    """What a case-insensitive, normalising file system compares: NFKC, case-folded, NFKC again."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", folder).casefold())


def check_distinct(folders: list[str], names: list[str] | None = None) -> None:
    """:class:`UnsafeName` when two folders would be one on some file system (``folder_key`` equal)."""
    names = names if names is not None else folders
    seen: dict[str, int] = {}
    for i, f in enumerate(folders):
        j = seen.setdefault(folder_key(f), i)
        if j != i:
            raise UnsafeName(f"class names {names[j]!r} and {names[i]!r} would share one folder on a "
                             "case-insensitive or Unicode-normalising file system")


def class_folders(names: list[str], reserved=frozenset()) -> list[str]:
    """The folder of each class (id = position), after checking each name and that no two share a folder."""
    folders = [class_folder(n, i, reserved) for i, n in enumerate(names)]
    check_distinct(folders, names)
    return folders
