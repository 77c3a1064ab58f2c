from __future__ import annotations

from inbound.ticket.mime_tree import parse_mime
from inbound.ticket.mime_walk import MimeContent, collect_content


def _multipart(subtype: str, *parts: str, params: str = "") -> str:
    body = "".join(f"--b{subtype}\r\n{part}\r\n" for part in parts)
    return f'Content-Type: multipart/{subtype}; boundary="b{subtype}"{params}\r\n\r\n{body}--b{subtype}--'


def _content(raw: str) -> MimeContent:
    return collect_content(parse_mime(raw.encode()))


def _types(content: MimeContent) -> list[str]:
    return [part.get_content_type() for part in content.attachments]


def test_alternative_keeps_the_first_plain_and_html_and_a_calendar() -> None:
    content = _content(
        _multipart(
            "alternative",
            "Content-Type: text/plain\r\n\r\nplain one",
            "Content-Type: text/enriched\r\n\r\n<bold>rich</bold>",
            "Content-Type: text/plain\r\n\r\nplain two",
            "Content-Type: text/html\r\n\r\n<p>html</p>",
            "Content-Type: text/watch-html\r\n\r\n<p>watch</p>",
            "Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR",
        )
    )
    assert (content.text, content.html) == ("plain one", "<p>html</p>")
    assert _types(content) == ["text/calendar"]


def test_mixed_bodies_are_joined_and_named_or_attached_text_is_an_attachment() -> None:
    content = _content(
        _multipart(
            "mixed",
            "Content-Type: text/plain\r\n\r\nfirst",
            'Content-Type: text/plain; name="notes.txt"\r\n\r\nnamed',
            "Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nattached",
            "Content-Type: text/plain\r\nContent-Disposition: inline\r\n\r\nsecond",
            "Content-Type: text/plain\r\n\r\n \r\n",  # blank parts add nothing
        )
    )
    assert content.text == "first\nsecond"
    assert _types(content) == ["text/plain", "text/plain"]


def test_nested_messages_are_attachments_and_not_body() -> None:
    content = _content(
        _multipart(
            "mixed",
            "Content-Type: text/plain\r\n\r\nFYI",
            "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text",
        )
    )
    assert content.text == "FYI"
    assert _types(content) == ["message/rfc822"]


def test_related_resources_are_attachments() -> None:
    content = _content(
        _multipart(
            "related",
            'Content-Type: text/html\r\n\r\n<img src="cid:i">',
            "Content-Type: image/png\r\nContent-ID: <i>\r\n\r\npng",
        )
    )
    assert content.html == '<img src="cid:i">'
    assert content.text is None
    assert _types(content) == ["image/png"]


def test_delivery_reports_are_found_only_in_a_delivery_status_report() -> None:
    status = "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\nAction: failed"
    dsn = _content(
        _multipart(
            "report", "Content-Type: text/plain\r\n\r\nfailed", status, params="; report-type=delivery-status"
        )
    )
    mdn = _content(_multipart("report", status, params="; report-type=disposition-notification"))
    forwarded = _content(
        _multipart("mixed", "Content-Type: message/rfc822\r\n\r\n" + _multipart("report", status))
    )
    assert (len(dsn.delivery_reports), dsn.report_type) == (1, "delivery-status")
    assert (mdn.delivery_reports, mdn.report_type) == ([], "disposition-notification")
    assert (forwarded.delivery_reports, forwarded.report_type) == ([], None)
    assert dsn.text == "failed"


def test_a_named_inline_text_part_is_the_body_when_there_is_none_yet() -> None:
    # As Python's get_body reads it: only "attachment" excludes a part. The second named inline part, and
    # a named part with no disposition at all (how many clients send attached text files), stay attachments.
    content = _content(
        _multipart(
            "mixed",
            'Content-Type: text/plain\r\nContent-Disposition: inline; filename="msg.txt"\r\n\r\nfirst text',
            'Content-Type: text/plain\r\nContent-Disposition: inline; filename="msg.txt"\r\n\r\nsecond text',
            'Content-Type: text/plain; name="notes.txt"\r\n\r\nnotes',
            'Content-Type: text/html\r\nContent-Disposition: attachment; filename="a.html"\r\n\r\n<p>x</p>',
        )
    )
    assert content.text == "first text"
    assert content.html is None
    assert _types(content) == ["text/plain", "text/plain", "text/html"]
