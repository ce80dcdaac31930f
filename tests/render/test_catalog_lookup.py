"""The catalogs parse one entry per lookup (start-up time); what they return must not change.

``catalog.presets()``/``skus()`` cut the data files at their top-level list items and parse an
entry alone when it is looked up. Every entry parsed that way must equal the same entry from
parsing the whole file, and any layout the cut does not recognise must fall back to the whole file.
"""

from __future__ import annotations

import pytest

from kaitoctl import catalog


@pytest.mark.parametrize(("filename", "key", "cls"), [("presets.yaml", "presets", catalog.Preset),
                                                      ("skus.yaml", "skus", catalog.Sku)])
def test_each_entry_alone_equals_the_whole_file(filename: str, key: str, cls: type) -> None:
    whole = catalog._Catalog(filename, key, cls)
    full = whole._everything()
    alone = catalog._Catalog(filename, key, cls)
    assert alone._chunks is not None and list(alone._chunks) == list(full)  # the shipped files are cut
    assert {name: alone[name] for name in full} == full
    assert alone._all is None  # and every lookup above parsed only its own entry
    assert alone.get("no-such-entry") is None and alone._all is None


def _catalog_from(text: str, monkeypatch: pytest.MonkeyPatch) -> catalog._Catalog:
    monkeypatch.setattr(catalog, "_read", lambda name: text)
    return catalog._Catalog("skus.yaml", "skus", catalog.Sku)


SKU = "{name: %s, cloud: aws, gpu_count: 1, gpu_memory_total: 16Gi, gpu_model: T4}"


@pytest.mark.parametrize(
    "text",
    [
        f"skus:\n  - {SKU % 'a'}\n  - {SKU % 'b'}\nextra:\n  - {SKU % 'c'}\n",    # another top-level key
        f"skus:\n  - {SKU % 'a'}\n  - {{cloud: aws, name: b, gpu_count: 1, gpu_memory_total: 1Gi, gpu_model: x}}\n",  # name not first
        f"skus:\n  - &x {SKU % 'a'}\n  - *x\n",                                  # anchors across entries
        f"# c\nskus:\n  - {SKU % 'a'}\n  - {SKU % 'a'}\n",                        # duplicate names
    ],
    ids=["other-key", "name-not-first", "anchor", "duplicate"],
)
def test_unrecognised_layouts_parse_the_whole_file(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lazy = _catalog_from(text, monkeypatch)
    expected = {entry["name"]: catalog.Sku(**entry) for entry in catalog._parse(text)["skus"]}
    assert lazy.get("a") == expected.get("a")
    assert dict(lazy) == expected


def test_an_entry_that_does_not_parse_alone_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # Cut fine, but the entry's name differs once parsed (a repeated key): the whole file decides.
    second = "{name: b, name: c, cloud: aws, gpu_count: 1, gpu_memory_total: 1Gi, gpu_model: x}"
    text = f"skus:\n  - {SKU % 'a'}\n  - {second}\n"
    lazy = _catalog_from(text, monkeypatch)
    assert lazy._chunks is not None
    assert lazy.get("b") is None and lazy._all is not None
    assert list(lazy) == ["a", "c"]
