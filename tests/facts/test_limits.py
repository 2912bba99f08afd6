"""Hostile and broken input (issue 16): every input is a regular file within its limit, every bomb
stops at a named limit. Each case runs the doctor as a user would, in a subprocess with a timeout:
a hang fails the test, a traceback fails it, and the user sees a one-line error or a finding.
Bombs are generated here at test time, never committed."""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from cpio_writer import file, header, newc
from helpers import FIXTURES

RELEASE = "6.1.0-56-xendom0"  # the example fixture's kernel (its boot/config-R)
TIMEOUT = 60  # seconds: every case here finishes in about one; a hang or a bomb does not


def run_doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PCIBACK_DOCTOR_DEBUG"}
    run = subprocess.run(
        [sys.executable, "-m", "pciback_doctor", *args],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    return run


def usage_error(*args: str) -> str:
    run = run_doctor(*args)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr.count("\n") == 1, run.stderr
    return run.stderr


def findings(*args: str) -> dict[str, list[str]]:
    run = run_doctor(*args, "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    found: dict[str, list[str]] = {}
    for f in json.loads(run.stdout)["findings"]:
        found.setdefault(f["id"], []).append(f["message"])
    return found


def analysis(*args: str) -> Any:
    run = run_doctor(*args, "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(FIXTURES / "example", copy, symlinks=True)
    return copy


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


# --- 1. only regular files are inputs -----------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        f"boot/initrd.img-{RELEASE}",
        f"boot/config-{RELEASE}",
        "boot/grub/grub.cfg",
        "etc/modprobe.d/x.conf",
        "etc/xen/guest.cfg",
        "etc/dracut.conf",
    ],
)
def test_a_fifo_inside_the_root_is_reported_not_waited_for(root: Path, rel: str) -> None:
    fifo(root / rel)
    found = findings("--root", str(root), "--kernel", RELEASE)
    assert f"{rel}: a FIFO, not a regular file" in found["PB110"]
    if rel.startswith("boot/initrd"):
        assert any("cannot be read: a FIFO" in m for m in found["PB403"])


@pytest.mark.parametrize(
    "option", ["--waivers", "--config", "--cmdline-file", "--domu-config", "--initramfs"]
)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_named_on_the_command_line_is_a_usage_error(
    tmp_path: Path, option: str, special: str
) -> None:
    path = str(fifo(tmp_path / "fifo")) if special == "fifo" else special
    err = usage_error("--root", str(FIXTURES / "example"), option, path)
    kind = "a FIFO" if special == "fifo" else "a character device"
    assert err == f"pciback-doctor: {option} {path}: {kind}, not a regular file\n"


@pytest.mark.parametrize(
    "command", [("domu",), ("initramfs",), ("--root", str(FIXTURES / "example"), "--domu-kernel")]
)
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_domu_and_initramfs_arguments_must_be_regular_files(
    tmp_path: Path, command: tuple[str, ...], special: str
) -> None:
    path = str(fifo(tmp_path / "fifo")) if special == "fifo" else special
    assert "not a regular file" in usage_error(*command, path)


def test_an_oversized_text_file_is_reported_by_its_limit(root: Path) -> None:
    with open(root / "etc/modprobe.d/big.conf", "wb") as big:
        big.truncate((1 << 20) + 1)  # sparse: costs no disk
    modules = root / f"lib/modules/{RELEASE}"
    modules.mkdir(parents=True, exist_ok=True)
    with open(modules / "modules.alias", "wb") as big:
        big.truncate((16 << 20) + 1)
    found = findings("--root", str(root))
    assert "etc/modprobe.d/big.conf: larger than the configuration file size (1 MiB) limit" in found["PB110"]
    alias = f"lib/modules/{RELEASE}/modules.alias: larger than the text file size (16 MiB) limit"
    assert alias in found["PB110"]


def test_an_oversized_explicit_input_is_a_usage_error(tmp_path: Path) -> None:
    big = tmp_path / "cmdline"
    with open(big, "wb") as out:
        out.truncate((1 << 20) + 1)
    err = usage_error("--root", str(FIXTURES / "example"), "--cmdline-file", str(big))
    assert err.endswith("larger than the configuration file size (1 MiB) limit\n")


def test_a_device_inside_the_root_is_never_opened() -> None:
    from pciback_doctor.facts.root import Root

    live = Root("/")
    assert live.read_bytes("dev/zero") is None  # would never end
    assert live.unreadable["dev/zero"] == "a character device, not a regular file"


# --- 2. the initramfs reader stops at its limits ------------------------------------------------


def gzip_stream(*parts: bytes, repeat_last: int = 1) -> bytes:
    """One gzip stream of `parts`, the last one `repeat_last` times (streamed: never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(p) for p in parts[:-1]]
    out += [packer.compress(parts[-1]) for _ in range(repeat_last)]
    return b"".join(out) + packer.flush()


def entry_head(name: str, size: int, ino: int = 1) -> bytes:
    raw = name.encode() + b"\0"
    head = header(len(raw), ino=ino, mode=0o100644, nlink=1, size=size) + raw
    return head + bytes(-len(head) % 4)


def image_check(tmp_path: Path, image: bytes) -> dict[str, list[str]]:
    path = tmp_path / "initrd.img"
    path.write_bytes(image)
    return findings("--root", str(FIXTURES / "example"), "--initramfs", str(path))


def test_a_gzip_bomb_stops_at_the_ratio_limit(tmp_path: Path) -> None:
    # 128 MiB of zeros as one file's data in 130 KB of gzip (the same bomb at 20 GiB took 97 s):
    # the ratio rule stops it after 64 MiB
    bomb = gzip_stream(entry_head("usr/lib/firmware/zeros.bin", 128 << 20), bytes(16 << 20), repeat_last=8)
    (message,) = image_check(tmp_path, bomb)["PB403"]
    assert "stopped at the initramfs compression ratio (200) limit" in message


@pytest.mark.parametrize("codec", ["zstd", "xz", "bzip2"])
def test_a_bomb_in_any_codec_stops_at_the_ratio_limit(tmp_path: Path, codec: str) -> None:
    import bz2

    packer: Any = {
        "zstd": lambda: zstandard.ZstdCompressor().compressobj(),
        "xz": lambda: lzma.LZMACompressor(lzma.FORMAT_XZ, preset=0),
        "bzip2": lambda: bz2.BZ2Compressor(1),
    }[codec]()
    parts = [packer.compress(entry_head("zeros", 128 << 20))]
    parts += [packer.compress(bytes(16 << 20)) for _ in range(8)]
    (message,) = image_check(tmp_path, b"".join([*parts, packer.flush()]))["PB403"]
    assert f"{codec} stream at offset 0: stopped at the initramfs compression ratio (200) limit" in message


def test_millions_of_entries_stop_at_the_entry_limit(tmp_path: Path) -> None:
    heads = b"".join(entry_head(f"d/{i}", 0, ino=i + 2) for i in range((1 << 18) + 10))
    (message,) = image_check(tmp_path, gzip_stream(heads))["PB403"]
    assert "stopped at the initramfs entry count (262,144) limit" in message


def test_a_huge_wanted_file_is_not_read_into_memory(tmp_path: Path) -> None:
    # modprobe.d files are read whole; 2 GiB of one was a MemoryError
    bomb = gzip_stream(entry_head("etc/modprobe.d/x.conf", 2 << 30), b"a" * (1 << 20), repeat_last=5)
    (message,) = image_check(tmp_path, bomb)["PB403"]
    assert (
        "etc/modprobe.d/x.conf is 2147483648 bytes, over the wanted initramfs file size (1 MiB) limit"
        in message
    )


def test_many_wanted_files_stop_at_the_kept_limit(tmp_path: Path) -> None:
    # each modprobe.d file under its own limit, 40 MiB of them together: all would be held in memory
    conf = b"#" + b"a" * ((1 << 20) - 2) + b"\n"  # 1 MiB: at the limit, not over it
    image = gzip_stream(*(entry_head(f"etc/modprobe.d/{i}.conf", len(conf)) + conf for i in range(40)))
    (message,) = image_check(tmp_path, image)["PB403"]
    assert "stopped at the initramfs names and files kept (32 MiB) limit" in message


def test_a_wanted_file_with_a_hundred_thousand_hard_links_is_read_in_linear_time(tmp_path: Path) -> None:
    def link(name: str, data: bytes) -> bytes:
        raw = name.encode() + b"\0"
        head = header(len(raw), ino=7, mode=0o100644, nlink=2, size=len(data)) + raw
        return head + bytes(-len(head) % 4) + data

    # the data comes with the first name; every later name re-linked all the earlier ones (minutes)
    parts = [link("etc/modprobe.d/x.conf", b"abcd"), *(link(f"l/{i}", b"") for i in range(100_000))]
    image = tmp_path / "initrd.img"
    image.write_bytes(b"".join(parts) + newc([]))
    run = run_doctor("initramfs", str(image))
    assert run.returncode == 0 and "ERROR" not in run.stdout, run.stdout[:500]


def test_an_image_file_over_the_size_limit_is_not_read(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    with open(image, "wb") as out:
        out.truncate(5 << 30)  # sparse: 5 GiB of holes read as NULs took minutes
    found = findings("--root", str(FIXTURES / "example"), "--initramfs", str(image))
    assert "over the initramfs decompressed size (4 GiB) limit" in found["PB403"][0]


def test_the_decompressed_size_limit_holds_across_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from pciback_doctor.facts import initramfs
    from pciback_doctor.facts.limits import Limit

    monkeypatch.setattr(initramfs, "IMAGE_OUTPUT", Limit("initramfs decompressed size", 4 << 20, "test"))
    one = gzip_stream(newc([file("etc/modprobe.d/a.conf", b"x"), file("big", bytes(range(256)) * 4096)]))
    result = initramfs.read_initramfs(io.BytesIO(one * 8), lambda name: name.endswith(".conf"))
    assert result.error is not None and "initramfs decompressed size (4 MiB) limit" in result.error
    assert result.files["etc/modprobe.d/a.conf"] == b"x"  # what came before the limit is kept


# --- 3. module files ------------------------------------------------------------------------------


def tiny_module(modinfo: bytes = b"license=GPL\0parmtype=hide:charp\0") -> bytes:
    """An ELF64 relocatable with a section table: null, .shstrtab, .modinfo (what kmod looks at)."""
    names = b"\0.shstrtab\0.modinfo\0"
    body = names + modinfo
    shoff = 64 + len(body) + (-len(body) % 8)
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)

    def shdr(name: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1 if size else 0, 0, 0, offset, size, 0, 0, 1, 0)

    table = shdr(0, 0, 0) + shdr(1, 64, len(names)) + shdr(11, 64 + len(names), len(modinfo))
    return ehdr + body + bytes(shoff - 64 - len(body)) + table


def test_the_tiny_module_reads() -> None:
    from pciback_doctor.facts.modules import read_modinfo

    assert read_modinfo(tiny_module(), "x.ko").params == {"hide": "charp"}


@given(
    field=st.sampled_from([0x28, 0x3A, 0x3C, 0x3E, "name", "offset", "size"]),
    section=st.integers(0, 2),
    value=st.sampled_from([0, 1, 63, 64, 0xFFFF, 2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1]),
)
@settings(max_examples=300, deadline=None)
def test_absurd_elf_header_values_are_a_modinfo_error(field: int | str, section: int, value: int) -> None:
    from pciback_doctor.facts.modules import ModinfoError, read_modinfo

    data = bytearray(tiny_module())
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    if isinstance(field, int):  # e_shoff (8 bytes), e_shentsize, e_shnum, e_shstrndx (2 bytes)
        width = 8 if field == 0x28 else 2
        struct.pack_into("<Q" if width == 8 else "<H", data, field, value % (1 << 8 * width))
    else:
        at, fmt = {"name": (0, "<I"), "offset": (0x18, "<Q"), "size": (0x20, "<Q")}[field]
        struct.pack_into(fmt, data, shoff + 64 * section + at, value % (1 << (32 if fmt == "<I" else 64)))
    with contextlib.suppress(ModinfoError):
        read_modinfo(bytes(data), "x.ko")


def module_bomb(kind: str) -> bytes:
    """A module that decompresses to 65 MiB (over MODULE_FILE) of zeros after a real ELF."""
    zeros, parts = bytes(1 << 20), 65
    if kind == "zst":
        packer = zstandard.ZstdCompressor().compressobj()
        out = [packer.compress(tiny_module())] + [packer.compress(zeros) for _ in range(parts)]
        return b"".join(out) + packer.flush()
    if kind == "xz":
        xz = lzma.LZMACompressor(lzma.FORMAT_XZ, preset=0)
        return b"".join([xz.compress(tiny_module()), *(xz.compress(zeros) for _ in range(parts)), xz.flush()])
    return gzip_stream(tiny_module(), zeros, repeat_last=parts)


@pytest.mark.parametrize("kind", ["zst", "xz", "gz"])
def test_a_module_bomb_stops_at_the_module_size_limit(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    modules = root / f"lib/modules/{RELEASE}"
    (modules / "kernel").mkdir(parents=True)
    (modules / f"kernel/xen-pciback.ko.{kind}").write_bytes(module_bomb(kind))
    (modules / "modules.dep").write_text(f"kernel/xen-pciback.ko.{kind}:\n")
    # no kernel config: PB107 (the module tree is all there is) carries the tree's problems
    (pb107,) = [
        f for f in analysis("--root", str(root), "--kernel", RELEASE)["findings"] if f["id"] == "PB107"
    ]
    evidence = [e["text"] for e in pb107["evidence"]]
    assert "unreadable module: decompresses to more than the module size (64 MiB) limit" in evidence


# --- 4. text inputs -------------------------------------------------------------------------------


def grub_root(tmp_path: Path, cfg: bytes) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "boot-debian-grub-xen", root, symlinks=True)
    (root / "boot/grub/grub.cfg").write_bytes(cfg)
    return root


@pytest.mark.parametrize("word", [b"a", b"=", b"${", b"[", b"\0"])
def test_a_long_grub_word_is_read_in_linear_time(tmp_path: Path, word: bytes) -> None:
    # one word of a million characters: joining it character by character took minutes
    line = b"menuentry 'x' {\n linux /vmlinuz-6.1 " + word * ((1000 << 10) // len(word)) + b"\n}\n"
    findings("--root", str(grub_root(tmp_path, line)))  # in time, no traceback


def test_a_huge_single_line_file_is_reported_not_parsed(tmp_path: Path) -> None:
    root = grub_root(tmp_path, b"")
    with open(root / "boot/grub/grub.cfg", "wb") as cfg:
        cfg.truncate(50 << 20)  # 50 MB, one "line" of NULs
    found = findings("--root", str(root))
    assert "boot/grub/grub.cfg: larger than the configuration file size (1 MiB) limit" in found["PB110"]


def test_a_line_over_the_line_limit_is_reported(root: Path) -> None:
    modules = root / f"lib/modules/{RELEASE}"
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "modules.alias").write_bytes(b"alias pci:v*d* " + b"x" * (2 << 20) + b"\n")
    found = findings("--root", str(root))
    message = f"lib/modules/{RELEASE}/modules.alias: a line longer than the line length (1 MiB) limit"
    assert message in found["PB110"]


def test_deep_nesting_in_an_xl_config_is_a_finding(root: Path) -> None:
    (root / "etc/xen/deep.cfg").write_text("pci = " + "[" * 5000 + "]" * 5000 + '\nkernel = "/k"\n')
    report = json.dumps(analysis("--root", str(root)))
    assert "lists nested deeper than the nesting depth (64) limit" in report


def boot_notes(root: Path) -> list[str]:
    """What the bootloader reader noted (in-process; the run itself is checked by `findings`)."""
    from pciback_doctor.facts.bootloader import find_next_boot
    from pciback_doctor.facts.root import Root

    return [p.message for p in find_next_boot(Root(root)).problems]


@pytest.mark.parametrize("nest", ["{ ", "if true; then ", "submenu x { "])
def test_deep_nesting_in_grub_cfg_is_cut_at_the_limit(tmp_path: Path, nest: str) -> None:
    root = grub_root(tmp_path, nest.encode() * 5000)  # was a RecursionError
    findings("--root", str(root))
    assert "nested deeper than the nesting depth (64) limit; rest ignored" in boot_notes(root)


def test_a_default_into_an_empty_submenu_boots_nothing(tmp_path: Path) -> None:
    cfg = b'set default="0>1"\nsubmenu "empty" {\n}\nmenuentry "b" {\n linux /vmlinuz-6.1 ro\n}\n'
    root = grub_root(tmp_path, cfg)  # was an IndexError
    findings("--root", str(root))
    assert "default '0>1' leads into an empty submenu" in boot_notes(root)


def test_deep_nesting_in_the_waivers_file_is_a_usage_error(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.toml"
    waivers.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    err = usage_error("--root", str(FIXTURES / "example"), "--waivers", str(waivers))
    assert "nested deeper than" in err


@pytest.mark.parametrize("hostile", ["bomb", "fifo"])
def test_predictions_that_depend_on_a_hostile_image_are_unknown(tmp_path: Path, hostile: str) -> None:
    # xen-pciback is a module here and e1000e may load from the image first: the image decides
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "module-modprobe-options", root, symlinks=True)
    image = root / "boot/initrd.img-6.1.0-56-amd64"
    if hostile == "fifo":
        fifo(image)
    else:
        image.write_bytes(gzip_stream(entry_head("zeros", 128 << 20), bytes(16 << 20), repeat_last=8))
    report = analysis("--root", str(root))
    assert [f["id"] for f in report["findings"]].count("PB403") == 1
    (device,) = [d for d in report["devices"] if d["bdf"] == "0000:05:00.0"]
    assert device["prediction"] == "unknown"


def test_an_absurd_section_offset_in_the_backend_module_is_no_internal_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    modules = root / f"lib/modules/{RELEASE}"
    (modules / "kernel").mkdir(parents=True)
    module = bytearray(tiny_module())
    shoff = struct.unpack_from("<Q", module, 0x28)[0]
    struct.pack_into("<Q", module, shoff + 2 * 64 + 0x18, 2**63)  # .modinfo's sh_offset: was OverflowError
    (modules / "kernel/xen-pciback.ko").write_bytes(module)
    (modules / "modules.dep").write_text("kernel/xen-pciback.ko:\n")
    (pb107,) = [
        f for f in analysis("--root", str(root), "--kernel", RELEASE)["findings"] if f["id"] == "PB107"
    ]
    evidence = [e["text"] for e in pb107["evidence"]]
    assert "unreadable module: not a kernel module ELF: a section lies outside the file" in evidence


def test_an_xl_config_of_errors_reports_the_first_ones(root: Path) -> None:
    # a finding per bad line: half a million of them took longer to render than everything else
    (root / "etc/xen/bad.cfg").write_text("}\n" * 100_000)
    found = findings("--root", str(root))
    assert len(found["PB505"]) == 21
    assert found["PB505"][-1] == "etc/xen/bad.cfg: and 99980 more errors (only the first 20 are reported)"


def test_too_many_aliases_are_reported_and_long_globs_not_compiled(root: Path) -> None:
    from pciback_doctor.facts.modules import parse_alias_file

    # a glob of 8,000 unclosed `[` took fnmatch 3 s to translate; 60,000 long globs a minute a device
    assert parse_alias_file("alias pci:v*" + "[a" * 8000 + " evil\n", "modules.alias") == ()
    lines = "".join(f"alias pci:v{i:08X}d*sv*sd*bc*sc*i* m{i}\n" for i in range(40_000))
    (root / f"lib/modules/{RELEASE}/modules.alias").write_text(lines)
    found = findings("--root", str(root))
    assert f"lib/modules/{RELEASE}/modules.alias: more than the alias count (32,768) limit" in found["PB110"]
