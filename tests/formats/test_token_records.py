"""Token export rows (JSONL, CSV) rendered for a whole chunk, against a record-by-record
reference built with ``orjson`` and the ``csv`` module, for every record shape."""

from __future__ import annotations

import csv
import io

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.formats import token_records as tr

SETTINGS = settings(max_examples=120, deadline=None)
TEXT = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\\\t\x00é日🙂')), max_size=12)


@st.composite
def chunks(draw) -> tr.TokenRecords:
    n = draw(st.integers(1, 7))
    text = draw(st.booleans())
    batch = draw(st.booleans())
    nested = batch and draw(st.booleans())
    ids = np.asarray(draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)), np.int64)
    batch_id = None
    if batch:  # non-decreasing: a chunk holds whole batches in order
        steps = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        batch_id = (np.cumsum(steps) + draw(st.integers(0, 10**6))).astype(np.int64)
    width = draw(st.sampled_from([None, 3]))
    lengths = [width] * n if width else draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    offsets = np.cumsum([0, *lengths]).astype(np.int64)
    tokens = np.asarray(
        draw(
            st.lists(
                st.integers(0, 2**31 - 1), min_size=int(offsets[-1]), max_size=int(offsets[-1])
            )
        ),
        np.int32,
    )
    texts = draw(st.lists(TEXT, min_size=n, max_size=n))
    encoded = [t.encode() for t in texts]
    details = None
    if draw(st.booleans()):
        details = {
            k: np.asarray(draw(st.lists(st.integers(-5, 10**9), min_size=n, max_size=n)), np.int64)
            for k in tr.DETAIL_FIELDS
        }
    blend = draw(st.booleans())
    names = ["pile", 'a,"b"', "日本"]
    return tr.TokenRecords(
        index=ids,
        batch_id=batch_id,
        tokens=None if text else tokens,
        token_offsets=None if text or width else offsets,
        width=width,
        text=np.frombuffer(b"".join(encoded), np.uint8) if text else None,
        text_offsets=np.cumsum([0] + [len(e) for e in encoded]).astype(np.int64) if text else None,
        details=details,
        nested=nested,
        batch_id_last=draw(st.booleans()),
        dataset=np.asarray([names[i % 3] for i in range(n)]) if blend else None,
        dataset_sample_id=np.arange(n, dtype=np.int64) * 7 if blend else None,
    )


def contents(rec: tr.TokenRecords) -> list:
    if rec.text is not None:
        buf, off = rec.text.tobytes(), rec.text_offsets
        return [buf[off[i] : off[i + 1]].decode() for i in range(len(rec))]
    off = rec.token_offsets
    if off is None:
        off = np.arange(len(rec) + 1) * rec.width
    return [rec.tokens[off[i] : off[i + 1]].tolist() for i in range(len(rec))]


def reference_jsonl(rec: tr.TokenRecords) -> bytes:
    content = contents(rec)
    with_batch = rec.batch_id is not None and not rec.nested
    rows = []
    for i in range(len(rec)):
        row: dict = {"index": int(rec.index[i])}
        if with_batch and not rec.batch_id_last:
            row["batch_id"] = int(rec.batch_id[i])
        if rec.dataset is not None:
            row["dataset"] = str(rec.dataset[i])
            row["dataset_sample_id"] = int(rec.dataset_sample_id[i])
        row["content"] = content[i]
        if rec.details:
            row["doc_details"] = {k: int(rec.details[k][i]) for k in tr.DETAIL_FIELDS}
        if with_batch and rec.batch_id_last:
            row["batch_id"] = int(rec.batch_id[i])
        rows.append(row)
    if rec.nested:
        lines, start = [], 0
        for i in range(1, len(rec) + 1):
            if i == len(rec) or rec.batch_id[i] != rec.batch_id[start]:
                lines.append({"batch_id": int(rec.batch_id[start]), "sequences": rows[start:i]})
                start = i
        rows = lines
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def reference_csv(rec: tr.TokenRecords) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(tr.csv_columns(rec))
    content = contents(rec)
    for i in range(len(rec)):
        row = [str(rec.index[i]), "CONTENT"]
        if rec.batch_id is not None and not rec.batch_id_last:
            row.append(str(rec.batch_id[i]))
        if rec.dataset is not None:
            row += [str(rec.dataset[i]), str(rec.dataset_sample_id[i])]
        if rec.details:
            row += [str(rec.details[k][i]) for k in tr.DETAIL_FIELDS]
        if rec.batch_id is not None and rec.batch_id_last:
            row.append(str(rec.batch_id[i]))
        if rec.text is not None:
            row[1] = content[i]
            writer.writerow(row)
        else:  # token lists are always quoted, as TokenSmith writes them: "[1, 2, 3]"
            line = io.StringIO(newline="")
            csv.writer(line).writerow(row)
            writer_row = line.getvalue().replace("CONTENT", '"' + str(content[i]) + '"', 1)
            buf.write(writer_row)
    return buf.getvalue().encode()


@SETTINGS
@given(chunks())
def test_jsonl_rows_match_record_by_record_orjson(rec: tr.TokenRecords) -> None:
    out = io.BytesIO()
    tr.write_jsonl(out, rec)
    assert out.getvalue() == reference_jsonl(rec)


@SETTINGS
@given(chunks())
def test_csv_rows_match_the_csv_module(rec: tr.TokenRecords) -> None:
    if rec.nested:
        rec.nested = False  # CSV holds no nested batches
    out = io.BytesIO()
    tr.write_csv(out, rec)
    assert out.getvalue() == reference_csv(rec)


@SETTINGS
@given(chunks())
def test_jsonl_lines_from_frames_are_the_writers(rec: tr.TokenRecords) -> None:
    """What the detokenizer writes around each text (json_frames) makes the same file."""
    from gpu.text_escape import framed_column

    if rec.text is None:
        return
    lines, _ = framed_column(rec.text, rec.text_offsets, tr.json_frames(rec), json=True)
    rec.lines, out = lines, io.BytesIO()
    tr.write_jsonl(out, rec)
    assert out.getvalue() == reference_jsonl(rec)
