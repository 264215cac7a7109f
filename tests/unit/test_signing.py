import pytest

from services.shared.signing import SignatureError, sign, verify

BODY = b'{"type": "PostCreated"}'


def test_a_signed_body_verifies():
    verify("s3cret", BODY, sign("s3cret", BODY, now=1000), now=1010)


@pytest.mark.parametrize(
    "header, fragment",
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=abc", "malformed"),
        ("t=soon,v1=abc", "malformed"),
        (sign("other", BODY, now=1000), "does not match"),
        (sign("s3cret", BODY + b" ", now=1000), "does not match"),
        (sign("s3cret", BODY, now=1000 - 301), "stale"),
        (sign("s3cret", BODY, now=1000 + 301), "stale"),
    ],
)
def test_unsigned_wrongly_signed_or_stale_bodies_are_refused(header, fragment):
    with pytest.raises(SignatureError) as info:
        verify("s3cret", BODY, header, now=1000)
    assert fragment in str(info.value)


def test_the_signature_covers_the_publishers_name():
    header = sign("s3cret", BODY, now=1000, source="posts")
    verify("s3cret", BODY, header, now=1000, source="posts")
    for claimed in (None, "comments"):  # dropped, or passed off as another publisher's
        with pytest.raises(SignatureError, match="does not match"):
            verify("s3cret", BODY, header, now=1000, source=claimed)
