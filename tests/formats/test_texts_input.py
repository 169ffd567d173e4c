"""What ``encode --input`` reads (issue 16, items 8 and 11): .txt, .jsonl, .csv/.tsv and .parquet
by the --text-field column, ``-`` for stdin; other extensions, directories and undecodable bytes
are refused with the file (and line) named."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffembed.formats.texts import InputError, read_text_source, read_texts


def test_csv_reads_the_text_field_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,text\n1,hello world\n2,"a, quoted\ntwo-line text"\n3,third\n')
    source = read_text_source(path)
    assert source.texts == ["hello world", "a, quoted\ntwo-line text", "third"]
    assert source.where == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert read_texts(path, "id") == ["1", "2", "3"]


def test_tsv_and_csv_errors_name_the_column_and_line(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("body\tx\nfirst\t1\n\t2\n")
    with pytest.raises(InputError, match=r"data\.tsv:3: empty text in column 'body'"):
        read_texts(path, "body")
    with pytest.raises(InputError, match=r"data\.tsv: no column 'text'.*body, x.*--text-field"):
        read_texts(path)


def test_parquet_reads_the_text_field_column(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "gamma"], "n": [1, 2]}), path)
    source = read_text_source(path)
    assert source.texts == ["alpha beta", "gamma"]
    assert source.where == [f"{path}: row 1", f"{path}: row 2"]
    with pytest.raises(InputError, match=r"data\.parquet: no column 'body'.*text, n"):
        read_texts(path, "body")
    with pytest.raises(InputError, match=r"data\.parquet: column 'n' holds int64, not text"):
        read_texts(path, "n")


def test_parquet_null_and_garbage_are_named(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["ok", None]}), path)
    with pytest.raises(InputError, match=r"nulls\.parquet: row 2: empty text"):
        read_texts(path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable Parquet file"):
        read_texts(bad)


@pytest.mark.parametrize("name", ["data.json", "notes.md", "README", "x.xlsx"])
def test_other_extensions_are_refused_with_the_accepted_list(tmp_path, name):
    path = tmp_path / name
    path.write_text('["a", "b"]')
    with pytest.raises(InputError) as exc:
        read_texts(path)
    message = str(exc.value)
    assert message.startswith(str(path))
    for ext in (".txt", ".jsonl", ".csv", ".parquet", "'-'"):
        assert ext in message


def test_stdin_dash_reads_lines(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"one\r\ntwo\n"), "utf-8"))
    source = read_text_source("-")
    assert source.texts == ["one", "two"]
    assert source.where == ["<stdin>:1", "<stdin>:2"]


def test_stdin_bad_bytes_name_stdin_and_line(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ok\nbad \xff\n"), "utf-8"))
    with pytest.raises(InputError, match=r"<stdin>:2: not valid UTF-8"):
        read_texts("-")


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: not valid UTF-8 \(byte 0xff at column 5\)"):
        read_texts(path)
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"text\nok\n\xff\n")
    with pytest.raises(InputError, match=r"bad\.csv:3: not valid UTF-8"):
        read_texts(csv)


def test_binary_file_is_named_binary(tmp_path):
    path = tmp_path / "blob.txt"
    path.write_bytes(b"ELF\x00\x01\x02\x03 header")
    with pytest.raises(InputError, match=r"blob\.txt:1: .*binary"):
        read_texts(path)


def test_directory_is_called_a_directory(tmp_path):
    with pytest.raises(InputError, match=r"is a directory, not a file"):
        read_texts(tmp_path)
    with pytest.raises(InputError, match=r"no such file"):
        read_texts(tmp_path / "missing.txt")


def test_utf8_bom_is_not_part_of_the_first_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefffirst\nsecond\n".encode())
    assert read_texts(path) == ["first", "second"]


def test_text_field_for_line_input_is_refused_not_ignored(tmp_path, monkeypatch):
    # issue 26: --text-field with .txt input was ignored silently
    path = tmp_path / "in.txt"
    path.write_text("one\ntwo\n")
    with pytest.raises(InputError, match=r"in\.txt: --text-field 'body' .* one text per line"):
        read_texts(path, "body")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"one\n"), "utf-8"))
    with pytest.raises(InputError, match=r"<stdin>: --text-field 'text' .*standard input"):
        read_texts("-", "text")
    assert read_texts(path) == ["one", "two"]  # no field given: the lines
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "a", "body": "b"}\n')
    assert read_texts(jsonl) == ["a"] and read_texts(jsonl, "body") == ["b"]
