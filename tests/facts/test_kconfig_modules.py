"""Kernel config and module tree readers."""

import contextlib
import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pciback_doctor.facts.kconfig import ConfigError, decode_config, parse_config
from pciback_doctor.facts.modules import (
    ModinfoError,
    module_name,
    parse_alias_file,
    parse_builtin_modinfo,
    read_modinfo,
)


def test_config_values_and_lines() -> None:
    text = '#\n# header\n#\nCONFIG_XEN=y\n# CONFIG_XEN_DOM0 is not set\nCONFIG_CMDLINE="a b"\nCONFIG_XEN_PCIDEV_BACKEND=m\n'
    cfg = parse_config(decode_config(gzip.compress(text.encode())), "proc/config.gz")
    assert cfg.get("CONFIG_XEN_PCIDEV_BACKEND") == "m"
    assert cfg.get("CONFIG_XEN_DOM0") == "n"
    assert cfg.get("CONFIG_ABSENT") == "n"
    assert cfg.get("CONFIG_CMDLINE") == "a b"
    assert cfg.evidence("CONFIG_XEN_DOM0").line == 5


@pytest.mark.parametrize("data", [b"\x7fELF\x00\x00binary", b"hello world\n", b"\x1f\x8bnot gzip"])
def test_garbage_is_not_a_config(data: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_config(decode_config(data), "x")


def test_module_names() -> None:
    assert module_name("kernel/drivers/xen/xen-pciback/xen-pciback.ko.zst") == "xen_pciback"
    assert module_name("kernel/drivers/tty/serial/8250/8250_pci.ko") == "8250_pci"


def test_builtin_modinfo_and_alias_file() -> None:
    data = b"8250.alias=char-major-4-*\x00e1000e.alias=pci:v00008086d000010D3sv*sd*bc*sc*i*\x00xen-pciback.parmtype=hide:charp\x00"
    aliases, params = parse_builtin_modinfo(data, "modules.builtin.modinfo")
    assert [a.module for a in aliases] == ["8250", "e1000e"]
    assert params == {"xen_pciback": ("hide",)}
    file_aliases = parse_alias_file(
        "# x\nalias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n", "modules.alias"
    )
    assert file_aliases[0].evidence.line == 2


@pytest.mark.parametrize(
    "data", [b"", b"\x7fELF" + b"\x00" * 60, b"\xfd7zXZ\x00broken", b"\x28\xb5\x2f\xfdxx"]
)
def test_bad_modules_raise_modinfo_error(data: bytes) -> None:
    with pytest.raises(ModinfoError):
        read_modinfo(data, "x.ko")


@given(st.binary(max_size=300))
def test_config_never_raises_other_errors(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(decode_config(data), "x")


@given(st.binary(max_size=300))
def test_modinfo_never_raises_other_errors(data: bytes) -> None:
    with contextlib.suppress(ModinfoError):
        read_modinfo(data, "x.ko")
