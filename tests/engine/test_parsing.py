"""The parsers of typed lists (bands, building class values), shared by the command line and the plugin:
each error names what was typed wrong."""

from __future__ import annotations

import pytest

from model.__main__ import main
from model.choices import parse_bands, parse_building_values
from model.errors import InputError


def test_bands_and_building_values_parse_the_same_separators():
    assert parse_bands("1, 2;3") == [1, 2, 3]
    assert parse_bands(" ") is None  # the engine's default bands
    assert parse_building_values("2") == [2]
    assert parse_building_values("2.0; 5") == [2, 5]
    assert parse_building_values((2, 5)) == [2, 5]


@pytest.mark.parametrize("text", ["1,x", "1.5", "red"])
def test_a_bad_band_string_says_bands(text):
    with pytest.raises(InputError, match=r"^Bands must be whole band numbers .* got '" + text):
        parse_bands(text)


@pytest.mark.parametrize("text", ["2,x", "2.5", ""])
def test_a_bad_building_value_string_says_building_class_values(text):
    with pytest.raises(InputError, match="[Bb]uilding class value"):
        parse_building_values(text)


def test_the_command_line_reports_a_bad_band_string_as_bands(tmp_path, capsys):
    arguments = ["train", "--images", "image.tif", "--labels", "labels.tif", "--output", str(tmp_path / "m.pt")]
    assert main([*arguments, "--bands", "1,x"]) == 2
    error = capsys.readouterr().err
    assert "Bands must be whole band numbers" in error and "building" not in error
    assert main([*arguments, "--building-values", "x"]) == 2
    assert "Building class values must be whole numbers" in capsys.readouterr().err
