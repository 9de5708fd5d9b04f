"""Hostile messages that the tests and the e-mail parsing benchmark share."""

from __future__ import annotations


def many_parts(shape: str, count: int = 20_000) -> bytes:
    """A message of at most 1 MiB with ``count`` MIME parts: each nested in the one before
    (``nested``), or side by side after the text part (short boundaries, no closing lines:
    the parser accepts unclosed multiparts). CRLF line ends, as mail arrives."""
    head = "From: mara@lunar-echoes.example\nSubject: Account Deletion Request\nMessage-ID: <p@x>\n"
    if shape == "nested":
        body = "".join(
            f"Content-Type:multipart/x;boundary={i:x}\n\n--{i:x}\n" for i in range(count)
        )
        body += "Content-Type: text/plain\n\nSite: lunar-echoes\n"
    else:
        body = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
        body += "Site: lunar-echoes\n" + "--b\n\nx\n" * count
    raw = (head + body).replace("\n", "\r\n").encode()
    if len(raw) > 1_048_576:
        raise ValueError(f"{count} parts do not fit in 1 MiB ({len(raw)} bytes)")
    return raw
