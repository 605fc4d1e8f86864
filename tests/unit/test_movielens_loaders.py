"""GroupLens MovieLens folder loaders (stream_rec.data.movielens), on tiny files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_rec.data.frame import Dataset, Interaction
from stream_rec.data.movielens import ML100K_GENRES, DatasetError, load_movielens
from stream_rec.data.movielens import movielens_item as Item


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


def write_ml100k(folder: Path) -> Path:
    folder.mkdir()
    toy = _flags("Animation", "Children's", "Comedy")
    lines = [
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{toy}",
        f"2|GoldenEye (1995)|01-Jan-1995||http://x|{_flags('Action', 'Thriller')}",
        f"9|Café au lait (1993)|01-Jan-1993||http://x|{_flags('unknown', 'Comedy')}",
        f"10|Untitled Short|01-Jan-1993||http://x|{_flags()}",
        "broken line",
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    data = [
        "2\t10\t4\t500",
        "2\t9\t3\t500",  # same ts as item 10: 9 sorts first (numeric, not lexicographic)
        "2\t1\t5\t400",
        "1\t2\t2\t900",
        "1\t1\t4\t100",
        "10\t1\t1\t50",
        "3\t99\t5\t10",  # item 99 is not in u.item: dropped, counted
    ]
    (folder / "u.data").write_text("\n".join(data) + "\n", encoding="latin-1")
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir()
    movies = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "2::Jumanji (1995)::Adventure|Children's|Fantasy",
        "3::Straße der Sehnsucht (1955)::Drama",
    ]
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    ratings = ["1::1::5::978300760", "1::3::3::978300760", "2::2::4::978300000"]
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    return folder


def write_latest(folder: Path) -> Path:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Ready Player One,Action|Sci-Fi\n"
        "3,Ébène (2019) ,(no genres listed)\n",
        encoding="utf-8",
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,2,3.5,964981247\n"
        "7,3,0.5,964982224\n"
        "7,404,5.0,964982224\n",
        encoding="utf-8",
    )
    return folder


def test_ml100k_items(tmp_path: Path) -> None:
    ds = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert isinstance(ds, Dataset)
    assert ds.name == "ml-100k"
    assert set(ds.items) == {"1", "2", "9", "10"}  # the short line is skipped
    assert ds.items["1"] == Item("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    assert ds.items["2"].attributes["genres"] == "Action|Thriller"
    cafe = ds.items["9"]
    assert cafe.title == "Café au lait"  # latin-1 decoded
    assert cafe.attributes["genres"] == "Comedy"  # "unknown" is never a genre
    assert ds.items["10"] == Item("10", "Untitled Short", None, ())


def test_ml100k_interactions(tmp_path: Path) -> None:
    ds = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert len(ds.interactions) == 6  # item 99 is not in the catalogue
    assert all(x.item_id in ds.items for x in ds.interactions)
    assert ds.bad_rows == {"behavior:unknown_item": 1}
    assert Interaction("2", "1", "rate", 5.0, 400.0) in ds.interactions
    assert all(isinstance(x.value, float) and isinstance(x.ts, float) for x in ds.interactions)
    assert {x.event for x in ds.interactions} == {"rate"}


def test_user_sequences_break_ties_by_numeric_item_id(tmp_path: Path) -> None:
    ds = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    seqs = ds.user_sequences()
    assert list(seqs) == ["1", "2", "10"]  # users in numeric order too
    assert [x.item_id for x in seqs["2"]] == ["1", "9", "10"]
    assert [x.item_id for x in seqs["1"]] == ["1", "2"]
    assert [x.ts for x in seqs["2"]] == [400, 500, 500]


def test_user_sequences_ties_independent_of_file_order(tmp_path: Path) -> None:
    ds = Dataset(
        "t",
        {},
        [
            Interaction("5", "100", "rate", 1.0, 7),
            Interaction("5", "20", "rate", 1.0, 7),
            Interaction("5", "3", "rate", 1.0, 7),
            Interaction("5", "1000", "rate", 1.0, 6),
        ],
    )
    assert [x.item_id for x in ds.user_sequences()["5"]] == ["1000", "3", "20", "100"]
    ds.interactions.reverse()
    assert [x.item_id for x in ds.user_sequences()["5"]] == ["1000", "3", "20", "100"]


def test_chronological_breaks_ties_by_user_then_item(tmp_path: Path) -> None:
    ds = load_movielens(write_ml100k(tmp_path / "ml-100k"))
    order = [(x.ts, x.user_id, x.item_id) for x in ds.chronological()]
    assert order == [
        (50, "10", "1"),
        (100, "1", "1"),
        (400, "2", "1"),
        (500, "2", "9"),
        (500, "2", "10"),
        (900, "1", "2"),
    ]


def test_ml1m_dat_format(tmp_path: Path) -> None:
    ds = load_movielens(write_ml1m(tmp_path / "ml-1m"))
    assert ds.name == "ml-1m"
    assert ds.items["2"] == Item("2", "Jumanji", 1995, ("Adventure", "Children's", "Fantasy"))
    assert ds.items["3"].title == "Straße der Sehnsucht"
    assert ds.items["3"].attributes["year"] == "1955"
    assert sorted((x.user_id, x.item_id, x.value, x.ts) for x in ds.interactions) == [
        ("1", "1", 5.0, 978300760),
        ("1", "3", 3.0, 978300760),
        ("2", "2", 4.0, 978300000),
    ]
    assert [x.item_id for x in ds.user_sequences()["1"]] == ["1", "3"]


def test_ml_latest_csv_format(tmp_path: Path) -> None:
    ds = load_movielens(str(write_latest(tmp_path / "ml-latest-small")))
    assert ds.name == "ml-latest-small"
    assert ds.items["1"] == Item(
        "1", "American President, The", 1995, ("Comedy", "Drama", "Romance")
    )
    assert ds.items["2"] == Item("2", "Ready Player One", None, ("Action", "Sci-Fi"))
    # Trailing space after the year is tolerated; "(no genres listed)" means no genres.
    assert ds.items["3"] == Item("3", "Ébène", 2019, ())
    assert [(x.user_id, x.item_id, x.value) for x in ds.interactions] == [
        ("1", "1", 4.0),
        ("1", "2", 3.5),
        ("7", "3", 0.5),
    ]
    assert ds.bad_rows == {"behavior:unknown_item": 1}  # item 404 is not in movies.csv


@pytest.mark.parametrize(
    "title,year",
    [
        ("Toy Story", 1995),
        ("Babe", None),
        ("1984", None),  # a four-digit title is not a year
        ("2001: A Space Odyssey", 1968),
        ("City of Lost Children, The (Cité des enfants perdus, La)", 1995),
    ],
)
def test_title_year_split_through_loader(tmp_path: Path, title: str, year: int | None) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    raw = title if year is None else f"{title} ({year})"
    (folder / "movies.dat").write_text(f"5::{raw}::Drama\n", encoding="latin-1")
    (folder / "ratings.dat").write_text("1::5::3::1\n", encoding="latin-1")
    it = load_movielens(folder).items["5"]
    assert (it.title, it.attributes.get("year")) == (title, str(year) if year else None)


def test_item_text_and_attributes() -> None:
    full = Item("1", "Toy Story", 1995, ("Animation", "Comedy"))
    assert full.text == "Toy Story. year 1995. genres Animation, Comedy"
    assert full.attributes == {"genres": "Animation|Comedy", "year": "1995"}
    bare = Item("2", "Babe", None, ())
    assert bare.text == "Babe"
    assert bare.attributes == {"genres": ""}
    assert Item("3", "X", None, ("Drama",)).text == "X. genres Drama"
    assert Item("4", "Y", 2001, ()).text == "Y. year 2001"


def test_file_path_is_not_a_dataset(tmp_path: Path) -> None:
    f = tmp_path / "ratings.csv"
    f.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DatasetError, match="not a folder"):
        load_movielens(f)


def test_missing_path_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a folder"):
        load_movielens(tmp_path / "does-not-exist")


def test_folder_without_movielens_files(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(DatasetError, match="not a GroupLens MovieLens folder"):
        load_movielens(tmp_path)
