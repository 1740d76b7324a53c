from hearth import SSEDecoder

FRAMES = (
    "event: stdout\nid: 1\ndata: {\"line\":\"h\u00e9\",\"type\":\"stdout\"}\n\n"
    ": heartbeat\n\n"
    "event: multi\r\ndata: one\r\ndata: two\r\n\r\n"
    "data: {\"x\":1}\r\r"
)


def decode(chunks):
    d = SSEDecoder()
    out = []
    for c in chunks:
        out.extend(d.feed(c))
    out.extend(d.flush())
    return out


def check(evs):
    assert [e.event for e in evs] == ["stdout", "multi", "message"]
    assert evs[0].data == {"line": "h\u00e9", "type": "stdout"} and evs[0].id == "1"
    assert evs[1].data == "one\ntwo"
    assert evs[2].data == {"x": 1}


def test_whole_body():
    check(decode([FRAMES.encode()]))


def test_every_split_point():
    raw = FRAMES.encode()
    for i in range(len(raw)):
        check(decode([raw[:i], raw[i:]]))


def test_byte_by_byte():
    raw = FRAMES.encode()  # includes a multi-byte UTF-8 char split across feeds
    check(decode([raw[i:i + 1] for i in range(len(raw))]))


def test_no_event_without_blank_line_until_flush():
    d = SSEDecoder()
    assert d.feed(b"event: exit\ndata: {\"exit_code\": 3}\n") == []
    evs = d.flush()
    assert len(evs) == 1 and evs[0].exit_code == 3


def test_comment_only_stream_yields_nothing():
    assert decode([b": heartbeat\n\n: heartbeat\n\n"]) == []


def test_event_id_is_the_frames_own():
    # A frame without `id:` does not inherit the previous frame's id, but
    # the decoder remembers the stream's last id for Last-Event-ID.
    d = SSEDecoder()
    evs = d.feed(b"id: 4\ndata: a\n\ndata: b\n\nid: 5\n\n")
    assert [(e.data, e.id) for e in evs] == [("a", "4"), ("b", None)]
    assert d.last_event_id == "5"
