"""A statistician never receives an identifier, by any path: every page reachable by GET,
every export they may download, every API content.

Records with identifying values are entered at two sites; the identifier fields come from
the study definition and their values from the database, so a field newly flagged
`identifier` is checked too. Pages are found by walking the URL map (arguments filled
with real labels, sites, instruments) and by following every link the statistician is
shown, so routes added later are walked without editing this test.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import deque
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from sqlalchemy import select

from app.api.handlers import CONTENTS
from app.auth.models import Site
from app.extensions import db
from app.records.models import FormInstance, Record
from app.study import current_study
from tests.exports_support import add_record
from tests.test_api import token

IDENTIFYING = {"text": ["QZXWKV", "HN-5581-ZQ"], "date": ["2019-07-14", "2019-07-15"]}
NOT_PAGES = {"static", "bootstrap.static", "auth.logout"}


def identifier_values() -> set[str]:
    """Every stored value of every identifier field, read back from the database."""
    study = current_study()
    values: set[str] = set()
    for form in db.session.scalars(select(FormInstance)):
        for f in study.identifier_fields:
            if f.instrument == form.instrument and form.data.get(f.name) not in (None, ""):
                values.add(str(form.data[f.name]))
    return values


@pytest.fixture
def identified(demo):
    """Two records whose identifier fields hold distinctive values, one at each of two sites."""
    study = current_study()
    for n, site in enumerate(("KMU", "NTH")):
        values = {}
        for f in study.identifier_fields:
            kind = "date" if f.type in ("date", "datetime") else "text"
            values.setdefault(f.instrument, {})[f.name] = IDENTIFYING[kind][n % 2] + (str(n) if kind == "text"
                                                                                      else "")
        add_record(site, values)
    db.session.commit()
    secret = identifier_values()
    assert len(secret) >= len(study.identifier_fields)
    return secret


def fill(rule, labels: list[str], sites: list[str]) -> list[str]:
    """URLs for a rule, its arguments filled with every label, site and instrument there is."""
    study = current_study()
    choices = {"label": labels, "site_code": sites, "instrument": [i.name for i in study.instruments],
               "instance": [1]}
    urls = [{}]
    for argument in sorted(rule.arguments):
        if argument not in choices:
            return []  # filled by following links instead
        urls = [{**u, argument: value} for u in urls for value in choices[argument]]
    from flask import url_for

    return [url_for(rule.endpoint, **u) for u in urls]


def test_statistician_sees_no_identifier_anywhere(identified, demo, as_user):
    client = as_user("statistician")
    labels = list(db.session.scalars(select(Record.label)))
    sites = list(db.session.scalars(select(Site.code)))
    with demo.test_request_context():
        start = [url for rule in demo.url_map.iter_rules()
                 if "GET" in rule.methods and rule.endpoint not in NOT_PAGES for url in fill(rule, labels, sites)]
    seen: set[str] = set()
    reached: set[str] = set()
    queue = deque(start)
    while queue:
        url = queue.popleft()
        if url in seen or url.startswith(("/static", "/bootstrap", "/logout")):
            continue
        seen.add(url)
        response = client.get(url)
        body = response.data.decode("utf-8", "replace")  # plots are PNG
        leaked = {value for value in identified if value in body}
        assert not leaked, f"GET {url} shows {leaked}"
        if response.status_code != 200:
            continue
        endpoint = demo.url_map.bind("localhost").match(urlsplit(url).path)[0]
        reached.add(endpoint)
        queue.extend(link.replace("&amp;", "&") for link in re.findall(r'href="(/[^"#]*)"', body))
        if endpoint == "exports.preview":  # the bundle this preview offers, downloaded and unpacked
            site = parse_qs(urlsplit(url).query).get("site", [""])[0]
            download = client.post(urlsplit(url).path, data={"site": site})
            assert download.status_code == 200 and download.mimetype == "application/zip", url
            archive = zipfile.ZipFile(io.BytesIO(download.data))
            for name in archive.namelist():
                text = archive.read(name).decode("utf-8", "replace")
                assert not {v for v in identified if v in text}, f"export {url}: {name}"
            reached.add("exports.download")
    assert {"dashboard.home", "exports.index", "exports.preview", "exports.download"} <= reached, reached


@pytest.mark.parametrize("fmt", ["json", "csv", "xml"])
def test_statistician_api_answers_hold_no_identifier(identified, demo, fmt):
    client = demo.test_client()
    statistician = token("statistician")
    for content in CONTENTS:
        body = urlencode({"token": statistician, "content": content, "format": fmt,
                          "exportDataAccessGroups": "true"})
        response = client.post("/api/", data=body, content_type="application/x-www-form-urlencoded",
                               buffered=True)
        text = response.get_data(as_text=True)
        assert not {value for value in identified if value in text}, f"content={content} format={fmt}"
