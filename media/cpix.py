"""Content keys from a key server, over DASH-IF CPIX (Content Protection Information Exchange, 2.3).

The engine makes the key id and asks the client's key server for the key and each key system's
signalling: it POSTs a CPIX document naming the content, the key id, the encryption scheme and one
``DRMSystem`` per system, and reads back

- the content key (``pskc:PlainValue``, base64): a secret, stored encrypted with the job like every
  content key, never logged nor written to storage;
- per system, the ``PSSH`` box (base64) that goes into init segments and the MPD, and for FairPlay the
  key URI (``URIExtXKey``, base64 of the ``skd://`` URI) of its HLS key tags.

Keys encrypted for a recipient (``DocumentKey``) are not supported: the server must answer keys in the
clear, over HTTPS. The request goes through the outbound guard (``taskengine_site.outbound``) like every
URL a client chose; the answer is bounded in size and parsed with ``defusedxml`` (no entities, no DTDs).
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeTree

from taskengine_site import outbound

CPIX = "urn:dashif:org:cpix"
PSKC = "urn:ietf:params:xml:ns:keyprov:pskc"
SYSTEM_IDS = {
    "clearkey": "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b",
    "widevine": "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
    "playready": "9a04f079-9840-4286-ab92-e65be0885f95",
    "fairplay": "94ce86fb-07ff-4f43-adb8-93d2fa968ca2",
}
MAX_RESPONSE_BYTES = 1_048_576
TIMEOUT = (5.0, 30.0)


class CpixError(Exception):
    """The key server could not be asked, or its answer is not a usable CPIX document."""


@dataclass(frozen=True)
class CpixKeys:
    key_id: str  # hex
    key: str  # hex
    pssh: dict[str, str] = field(default_factory=dict)  # system -> pssh box, hex
    fairplay_uri: str = ""


def request_document(content_id: str, key_id: str, scheme: str, systems: tuple[str, ...]) -> bytes:
    """The CPIX request: the content, the key id the engine chose and the systems it needs."""
    kid = str(uuid.UUID(hex=key_id))
    root = Element(f"{{{CPIX}}}CPIX", {"contentId": content_id, "version": "2.3"})
    keys = SubElement(root, f"{{{CPIX}}}ContentKeyList")
    SubElement(keys, f"{{{CPIX}}}ContentKey", {"kid": kid, "commonEncryptionScheme": scheme})
    drm = SubElement(root, f"{{{CPIX}}}DRMSystemList")
    for system in systems:
        SubElement(drm, f"{{{CPIX}}}DRMSystem", {"kid": kid, "systemId": SYSTEM_IDS[system]})
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root)


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except ValueError:
        raise CpixError(f"the key server's {what} is not base64") from None


def parse_response(data: bytes, key_id: str, systems: tuple[str, ...]) -> CpixKeys:
    """The key and signalling for ``key_id`` from a CPIX answer; ``CpixError`` saying what is wrong."""
    try:
        root = SafeTree.fromstring(data)
    except Exception as exc:  # defusedxml raises its own errors and ParseError alike
        raise CpixError(f"the key server's answer is not XML: {type(exc).__name__}") from None
    if root.tag != f"{{{CPIX}}}CPIX":
        raise CpixError("the key server's answer is not a CPIX document")
    kid = str(uuid.UUID(hex=key_id))
    key = None
    for content_key in root.iter(f"{{{CPIX}}}ContentKey"):
        if (content_key.get("kid") or "").lower() != kid:
            continue
        if content_key.find(f".//{{{PSKC}}}EncryptedValue") is not None:
            raise CpixError("the key server encrypted the content key; only keys in the clear are supported")
        plain = content_key.find(f".//{{{PSKC}}}PlainValue")
        if plain is None:
            raise CpixError("the key server's ContentKey holds no PlainValue")
        key = _b64(plain.text, "content key")
    if key is None:
        raise CpixError("the key server's answer has no ContentKey for the key id asked for")
    if len(key) != 16:
        raise CpixError(f"the key server's content key is {len(key)} bytes, not 16")
    by_id = {value: name for name, value in SYSTEM_IDS.items()}
    pssh: dict[str, str] = {}
    fairplay_uri = ""
    for element in root.iter(f"{{{CPIX}}}DRMSystem"):
        system = by_id.get((element.get("systemId") or "").lower())
        if system not in systems or (element.get("kid") or "").lower() != kid:
            continue
        box = element.find(f"{{{CPIX}}}PSSH")
        if box is not None and (box.text or "").strip():
            raw = _b64(box.text, f"{system} PSSH")
            if len(raw) < 32 or raw[4:8] != b"pssh" or int.from_bytes(raw[:4], "big") != len(raw):
                raise CpixError(f"the key server's {system} PSSH is not one pssh box")
            pssh[system] = raw.hex()
        uri = element.find(f"{{{CPIX}}}URIExtXKey")
        if system == "fairplay" and uri is not None:
            fairplay_uri = _b64(uri.text, "FairPlay URIExtXKey").decode("utf-8", errors="replace")
    unusable = not fairplay_uri.startswith("skd://") or any(c.isspace() or c in '",' for c in fairplay_uri)
    if "fairplay" in systems and unusable:
        raise CpixError("the key server gave FairPlay no usable skd:// URIExtXKey")
    return CpixKeys(key_id=key_id, key=key.hex(), pssh=pssh, fairplay_uri=fairplay_uri)


def fetch_keys(url: str, *, content_id: str, key_id: str, scheme: str, systems: tuple[str, ...]) -> CpixKeys:
    """Ask the key server at ``url`` (through the outbound guard) for the key of ``key_id``."""
    body = request_document(content_id, key_id, scheme, systems)
    try:
        response = outbound.request(
            "POST",
            url,
            data=body,
            headers={"Content-Type": "application/xml", "Accept": "application/xml"},
            timeout=TIMEOUT,
            max_bytes=MAX_RESPONSE_BYTES,
        )
    except outbound.OutboundError as exc:
        raise CpixError(f"the key server could not be reached: {exc}") from None
    if not response.ok:
        raise CpixError(f"the key server answered HTTP {response.status_code}")
    if response.truncated:
        raise CpixError(f"the key server's answer is larger than {MAX_RESPONSE_BYTES} bytes")
    return parse_response(response.content, key_id, systems)
