"""Next-boot discovery: which entry GRUB / BLS / xen.efi boots next, and what it boots with."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pciback_doctor.facts.bootloader import (
    NextBoot,
    find_next_boot,
    kernel_release_of,
)
from pciback_doctor.facts.bootloader.bls import _strverscmp
from pciback_doctor.facts.root import Root

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
UUID = "4f1c2b7e-9a3d-4c11-8e2f-5b6a7c8d9e01"
HIDE = "xen-pciback.hide=(0000:05:00.0)"


def boot(path: Path) -> NextBoot:
    return find_next_boot(Root(path))


def write(root: Path, rel: str, text: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def grubenv(**values: str) -> str:
    body = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    return body + "#" * (1024 - len(body))


@pytest.fixture
def debian(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "boot-debian-grub-xen", root)
    return root


def set_default(root: Path, grub_cfg_value: str, grub_default: str | None = None) -> None:
    cfg = root / "boot/grub/grub.cfg"
    cfg.write_text(cfg.read_text().replace('set default="3>0>2"', f'set default="{grub_cfg_value}"'))
    if grub_default is not None:
        conf = root / "etc/default/grub"
        conf.write_text(conf.read_text().replace('GRUB_DEFAULT="3>0>2"', f'GRUB_DEFAULT="{grub_default}"'))


# --- the four fixtures -------------------------------------------------------------------------


def test_debian_grub_xen_pinned_submenu_entry() -> None:
    nb = boot(FIXTURES / "boot-debian-grub-xen")
    e = nb.entry
    assert e is not None
    assert e.source == "grub" and e.is_xen
    assert e.title == "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-17-amd64"
    assert e.menu_path == "3>0>2"
    assert e.kernel_path == "boot/vmlinuz-6.1.0-17-amd64"
    assert e.kernel_release == "6.1.0-17-amd64"
    # `placeholder` (Debian's argv[0]) is not part of either command line.
    assert e.cmdline == f"root=UUID={UUID} ro {HIDE} quiet"
    assert e.xen_cmdline == "iommu=1 dom0_mem=4G"
    assert e.xen_path == "boot/xen-4.17-amd64.gz"
    assert e.initrd_paths == ("boot/initrd.img-6.1.0-17-amd64",)
    assert {ev.path for ev in e.evidence} == {"boot/grub/grub.cfg"}
    assert "3>0>2" in nb.why and "GRUB_DEFAULT" in nb.why and "etc/default/grub:7" in nb.why
    assert nb.stale == ()
    assert nb.bootloader == "grub"


def test_debian_grub_lists_every_entry_with_its_menu_path() -> None:
    nb = boot(FIXTURES / "boot-debian-grub-xen")
    paths = [e.menu_path for e in nb.entries]
    assert paths[:6] == ["0", "1>0", "1>1", "1>2", "1>3", "2"]
    assert "3>0>3" in paths
    plain = nb.entries[0]
    assert not plain.is_xen and plain.xen_cmdline is None
    assert plain.cmdline == f"root=UUID={UUID} ro quiet"
    assert plain.initrd_paths == ("boot/initrd.img-6.1.0-18-amd64",)


def test_fedora_bls_saved_entry_beats_newest() -> None:
    nb = boot(FIXTURES / "boot-fedora-bls")
    e = nb.entry
    assert e is not None
    assert e.source == "bls" and not e.is_xen and e.xen_cmdline is None
    assert e.kernel_release == "6.5.6-300.fc39.x86_64"
    # /boot is its own partition: BLS paths are relative to it.
    assert e.kernel_path == "boot/vmlinuz-6.5.6-300.fc39.x86_64"
    assert e.initrd_paths == ("boot/initramfs-6.5.6-300.fc39.x86_64.img",)
    # `options $kernelopts` expanded from grubenv.
    assert e.cmdline == (
        "root=/dev/mapper/fedora-root ro rd.lvm.lv=fedora/root rhgb quiet xen-pciback.hide=(0000:03:00.0)"
    )
    assert "saved_entry" in nb.why and "boot/grub2/grubenv" in nb.why and "GRUB_DEFAULT=saved" in nb.why
    assert nb.stale == ()
    # The menu blscfg builds is newest first.
    assert [x.kernel_release for x in nb.entries][:2] == ["6.5.12-300.fc39.x86_64", "6.5.6-300.fc39.x86_64"]


def test_efi_xen_cfg_default_section() -> None:
    nb = boot(FIXTURES / "boot-efi-xen-cfg")
    e = nb.entry
    assert e is not None
    assert e.source == "xen.cfg" and e.is_xen and e.id == "debian-6.1.0-17"
    assert e.kernel_path == "boot/efi/EFI/xen/vmlinuz-6.1.0-17-amd64"
    assert e.kernel_release == "6.1.0-17-amd64"
    assert e.cmdline.endswith("quiet xen-pciback.hide=(0000:05:00.0)(0000:06:00.0)")
    assert e.xen_cmdline == "console=vga iommu=1 dom0_mem=4G,max:4G"
    assert e.initrd_paths == ("boot/efi/EFI/xen/initrd.img-6.1.0-17-amd64",)
    assert "default=debian-6.1.0-17" in nb.why and "xen.cfg:3" in nb.why
    assert len(nb.entries) == 2
    assert nb.bootloader == "xen.efi"


def test_stale_grub_cfg_is_reported_with_both_files() -> None:
    nb = boot(FIXTURES / "boot-stale-grub")
    e = nb.entry
    assert e is not None and e.is_xen
    assert e.title == "Debian GNU/Linux, with Xen hypervisor"
    assert HIDE not in e.cmdline  # what will really boot
    assert e.xen_cmdline == "dom0_mem=4G,max:4G"
    [stale] = nb.stale
    assert stale.kind == "dom0-cmdline"
    assert stale.missing == (HIDE,) and stale.extra == ()
    assert {ev.path for ev in stale.evidence} == {"etc/default/grub", "boot/grub/grub.cfg"}
    assert any(ev.path == "etc/default/grub" and ev.line == 12 for ev in stale.evidence)
    assert "not regenerated" in stale.message


# --- GRUB_DEFAULT / set default forms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "title", "release"),
    [
        ("0", "Debian GNU/Linux", "6.1.0-18-amd64"),
        ("2", "Debian GNU/Linux, with Xen hypervisor", "6.1.0-18-amd64"),
        ("1>2", "Debian GNU/Linux, with Linux 6.1.0-17-amd64", "6.1.0-17-amd64"),
        ("3>0>1", "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-18-amd64 (recovery mode)", None),
        (f"xen-gnulinux-simple-{UUID}", "Debian GNU/Linux, with Xen hypervisor", None),
        ("Debian GNU/Linux, with Xen hypervisor", "Debian GNU/Linux, with Xen hypervisor", None),
        (
            "Advanced options for Debian GNU/Linux (with Xen hypervisor)>Xen hypervisor, version "
            "4.17-amd64>Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-17-amd64",
            "Debian GNU/Linux, with Xen 4.17-amd64 and Linux 6.1.0-17-amd64",
            None,
        ),
    ],
)
def test_grub_default_forms(debian: Path, value: str, title: str, release: str | None) -> None:
    set_default(debian, value, value)
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.title == title
    if release:
        assert nb.entry.kernel_release == release
    assert f"default='{value}'" in nb.why
    assert nb.stale == ()


def test_grub_default_recovery_entry_has_single_and_short_xen_cmdline(debian: Path) -> None:
    set_default(debian, "3>0>1", "3>0>1")
    e = boot(debian).entry
    assert e is not None
    assert e.cmdline.split()[2:] == ["single", HIDE]
    assert e.xen_cmdline == "iommu=1 dom0_mem=4G"


def test_grub_default_saved_uses_grubenv(debian: Path) -> None:
    set_default(debian, "${saved_entry}", "saved")
    write(debian, "boot/grub/grubenv", grubenv(saved_entry="Debian GNU/Linux, with Xen hypervisor"))
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.title == "Debian GNU/Linux, with Xen hypervisor"
    assert "grubenv saved_entry='Debian GNU/Linux, with Xen hypervisor' (boot/grub/grubenv:2)" in nb.why
    assert "GRUB_DEFAULT=saved" in nb.why
    assert nb.stale == ()


def test_grub_reboot_next_entry_wins_once(debian: Path) -> None:
    write(debian, "boot/grub/grubenv", grubenv(next_entry="0"))
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.title == "Debian GNU/Linux" and not nb.entry.is_xen
    assert "next_entry" in nb.why and "grub-reboot" in nb.why


def test_grub_saved_without_grubenv_boots_first_entry(debian: Path) -> None:
    set_default(debian, "${saved_entry}", "saved")
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.menu_path == "0"
    assert "no saved_entry" in nb.why


def test_grub_default_matching_nothing_falls_back_to_first(debian: Path) -> None:
    set_default(debian, "no such entry", "no such entry")
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.menu_path == "0"
    assert any("matches no menu entry" in p.message for p in nb.problems)


def test_debian_duplicate_advanced_submenu_id_is_followed_like_grub(debian: Path) -> None:
    # 10_linux and 20_linux_xen both call their submenu gnulinux-advanced-UUID: GRUB takes the first
    # (the plain Linux one), finds no Xen id in it, and boots that submenu's first entry.
    value = f"gnulinux-advanced-{UUID}>xen-gnulinux-6.1.0-17-amd64-advanced-{UUID}"
    set_default(debian, value, value)
    nb = boot(debian)
    assert nb.entry is not None and not nb.entry.is_xen
    assert nb.entry.menu_path == "1>0"
    assert any("matches no menu entry" in p.message for p in nb.problems)


def test_grub_default_changed_without_update_grub(debian: Path) -> None:
    conf = debian / "etc/default/grub"
    conf.write_text(conf.read_text().replace('GRUB_DEFAULT="3>0>2"', "GRUB_DEFAULT=saved"))
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.menu_path == "3>0>2"  # grub.cfg decides
    [stale] = nb.stale
    assert stale.kind == "default" and stale.missing == ("saved",)


def test_removed_hide_is_reported_as_extra(debian: Path) -> None:
    conf = debian / "etc/default/grub"
    conf.write_text(conf.read_text().replace(f'GRUB_CMDLINE_LINUX_XEN_REPLACE="{HIDE}"', ""))
    [stale] = boot(debian).stale
    assert stale.kind == "dom0-cmdline" and stale.extra == (HIDE,) and stale.missing == ()


def test_changed_xen_cmdline_is_stale(debian: Path) -> None:
    conf = debian / "etc/default/grub"
    conf.write_text(conf.read_text().replace("iommu=1 dom0_mem=4G", "iommu=1 dom0_mem=8G"))
    [stale] = boot(debian).stale
    assert stale.kind == "xen-cmdline"
    assert stale.missing == ("dom0_mem=8G",) and stale.extra == ("dom0_mem=4G",)


def test_unevaluable_variable_is_noted_not_guessed(debian: Path) -> None:
    conf = debian / "etc/default/grub"
    conf.write_text(
        conf.read_text()
        .replace(f'"{HIDE}"', '"$(cat /etc/pciback-hide)"')
        .replace("dom0_mem=4G", "dom0_mem=8G")
    )
    nb = boot(debian)
    assert [s.kind for s in nb.stale] == ["xen-cmdline"]  # dom0 side not judged
    assert any("GRUB_CMDLINE_LINUX_XEN_REPLACE" in p.message for p in nb.problems)


def test_shell_variables_and_conditions_are_followed(debian: Path) -> None:
    write(
        debian,
        "etc/default/grub.d/50-hide.cfg",
        'HIDE="(0000:05:00.0)"\nif [ "$HIDE" != "" ]; then\n'
        '  GRUB_CMDLINE_LINUX_XEN_REPLACE="xen-pciback.hide=$HIDE"\nfi\n',
    )
    assert boot(debian).stale == ()


def test_shell_unknown_condition_makes_the_value_untrusted(debian: Path) -> None:
    write(
        debian,
        "etc/default/grub.d/50-hide.cfg",
        'if [ -e /etc/passthrough ]; then\n  GRUB_CMDLINE_LINUX_XEN_REPLACE="something else"\nfi\n',
    )
    nb = boot(debian)
    assert nb.stale == ()
    assert any("not evaluable" in p.message for p in nb.problems)


# --- GRUB details ---------------------------------------------------------------------------------


def test_multiboot1_xen_and_separate_boot_partition(tmp_path: Path) -> None:
    write(
        tmp_path,
        "boot/grub/grub.cfg",
        'menuentry "Xen 4.11" {\n'
        "  multiboot /xen-4.11-amd64.gz dom0_mem=1G\n"
        "  module /vmlinuz-5.10.0-9-amd64 root=/dev/sda2 ro\n"
        "  module /initrd.img-5.10.0-9-amd64\n}\n",
    )
    write(tmp_path, "boot/vmlinuz-5.10.0-9-amd64", "")
    e = boot(tmp_path).entry
    assert e is not None and e.is_xen
    assert e.kernel_path == "boot/vmlinuz-5.10.0-9-amd64"  # /boot was its own partition
    assert e.cmdline == "root=/dev/sda2 ro" and e.xen_cmdline == "dom0_mem=1G"
    assert e.initrd_paths == ("boot/initrd.img-5.10.0-9-amd64",)


def test_path_at_root_is_kept_when_only_it_exists(tmp_path: Path) -> None:
    write(tmp_path, "boot/grub/grub.cfg", "menuentry 'x' {\n linux (hd0,1)/vmlinuz root=/dev/sda1\n}\n")
    write(tmp_path, "vmlinuz", "")
    e = boot(tmp_path).entry
    assert e is not None and e.kernel_path == "vmlinuz" and e.kernel_release is None


def test_custom_cfg_entries_are_read(debian: Path) -> None:
    write(
        debian,
        "boot/grub/custom.cfg",
        "menuentry 'Custom Xen' --id custom-xen {\n"
        "  multiboot2 /boot/xen.gz dom0_mem=2G\n  module2 /boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1\n}\n",
    )
    set_default(debian, "custom-xen")
    nb = boot(debian)
    assert nb.entry is not None and nb.entry.title == "Custom Xen"
    assert nb.entry.evidence[0].path == "boot/grub/custom.cfg"


def test_tricky_quoting(tmp_path: Path) -> None:
    write(
        tmp_path,
        "boot/grub2/grub.cfg",
        'set default="it\'s >> here"\nset extra="a  b"\n'
        "menuentry 'it'\\''s > here' {\n  linux /boot/vmlinuz-6.6.1 one=\"x y\" $extra ${nothing}z\n}\n",
    )
    e = boot(tmp_path).entry
    assert e is not None and e.title == "it's > here"
    assert e.cmdline == "one=x y a b z"


# --- BLS with systemd-boot ------------------------------------------------------------------------


def bls(root: Path, name: str, version: str, sort_key: str | None = None) -> None:
    lines = [f"title Linux {version}", f"version {version}", f"linux /{version}/linux"]
    lines += [f"initrd /{version}/initrd", f"options root=/dev/vda2 v={version}"]
    if sort_key:
        lines.append(f"sort-key {sort_key}")
    write(root, f"efi/loader/entries/{name}.conf", "\n".join(lines) + "\n")


def test_systemd_boot_newest_version_without_default(tmp_path: Path) -> None:
    bls(tmp_path, "debian-6.1.0-9-amd64", "6.1.0-9-amd64")
    bls(tmp_path, "debian-6.1.0-10-amd64", "6.1.0-10-amd64")
    bls(tmp_path, "debian-6.1.0-11-amd64+0-3", "6.1.0-11-amd64")  # no tries left: last
    nb = boot(tmp_path)
    assert nb.bootloader == "systemd-boot"
    e = nb.entry
    assert e is not None and e.kernel_release == "6.1.0-10-amd64"
    assert e.kernel_path == "efi/6.1.0-10-amd64/linux"  # relative to the ESP the entry is on
    assert e.initrd_paths == ("efi/6.1.0-10-amd64/initrd",)
    assert e.cmdline == "root=/dev/vda2 v=6.1.0-10-amd64"
    assert "first entry" in nb.why


def test_systemd_boot_sort_key_and_loader_conf_glob(tmp_path: Path) -> None:
    bls(tmp_path, "b-2", "2.0", sort_key="b")
    bls(tmp_path, "a-1", "1.0", sort_key="a")
    bls(tmp_path, "zzz-9", "9.0")
    assert [e.id for e in boot(tmp_path).entries] == ["a-1", "b-2", "zzz-9"]
    write(tmp_path, "efi/loader/loader.conf", "timeout 3\ndefault b-*\n")
    nb = boot(tmp_path)
    assert nb.entry is not None and nb.entry.id == "b-2"
    assert "default 'b-*'" in nb.why and "efi/loader/loader.conf:2" in nb.why


# --- several boot loaders: EFI variables decide -------------------------------------------------

GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def efivar(payload: bytes) -> bytes:
    return struct.pack("<I", 7) + payload


def load_option(description: str, path: str) -> bytes:
    file_node = path.encode("utf-16-le") + b"\0\0"
    devpath = struct.pack("<BBH", 4, 4, 4 + len(file_node)) + file_node + struct.pack("<BBH", 0x7F, 0xFF, 4)
    return struct.pack("<IH", 1, len(devpath)) + (description + "\0").encode("utf-16-le") + devpath


def two_loaders(root: Path) -> None:
    shutil.copytree(FIXTURES / "boot-debian-grub-xen", root, dirs_exist_ok=True)
    shutil.copytree(FIXTURES / "boot-efi-xen-cfg", root, dirs_exist_ok=True)


def test_unknown_boot_order_prefers_grub_and_says_so(tmp_path: Path) -> None:
    two_loaders(tmp_path)
    nb = boot(tmp_path)
    assert nb.bootloader == "grub"
    assert "EFI boot order unknown" in nb.why and "xen.efi" in nb.why
    assert any("several boot loaders" in p.message for p in nb.problems)
    assert {e.source for e in nb.entries} == {"grub", "xen.cfg"}


def test_efi_boot_order_picks_xen_efi(tmp_path: Path) -> None:
    two_loaders(tmp_path)
    efivars = "sys/firmware/efi/efivars"
    write(tmp_path, f"{efivars}/BootOrder-{GLOBAL}", efivar(struct.pack("<HH", 3, 0)))
    write(tmp_path, f"{efivars}/Boot0003-{GLOBAL}", efivar(load_option("Xen", "\\EFI\\xen\\xen.efi")))
    write(
        tmp_path, f"{efivars}/Boot0000-{GLOBAL}", efivar(load_option("debian", "\\EFI\\debian\\shimx64.efi"))
    )
    nb = boot(tmp_path)
    assert nb.bootloader == "xen.efi"
    assert nb.entry is not None and nb.entry.source == "xen.cfg"
    assert "Boot0003" in nb.why and "/EFI/xen/xen.efi" in nb.why
    write(tmp_path, f"{efivars}/BootNext-{GLOBAL}", efivar(struct.pack("<H", 0)))
    assert boot(tmp_path).bootloader == "grub"


def test_nothing_found(tmp_path: Path) -> None:
    nb = boot(tmp_path)
    assert nb.entry is None and nb.entries == () and "no boot loader" in nb.why


# --- small pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("6.1.0-10-amd64", "6.1.0-9-amd64", 1),
        ("6.5.12-300.fc39", "6.5.6-300.fc39", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0", 0),
        ("1.0a", "1.0", 1),
        ("1.0^post", "1.0", 1),
    ],
)
def test_strverscmp(a: str, b: str, sign: int) -> None:
    assert (_strverscmp(a, b) > 0) - (_strverscmp(a, b) < 0) == sign
    assert (_strverscmp(b, a) > 0) - (_strverscmp(b, a) < 0) == -sign


@pytest.mark.parametrize(
    ("path", "release"),
    [
        ("boot/vmlinuz-6.1.0-18-amd64", "6.1.0-18-amd64"),
        ("vmlinuz-6.5.6-300.fc39.x86_64", "6.5.6-300.fc39.x86_64"),
        ("boot/vmlinuz-linux", None),
        ("boot/vmlinuz", None),
        (None, None),
    ],
)
def test_kernel_release_of(path: str | None, release: str | None) -> None:
    assert kernel_release_of(path) == release


# --- never raises -------------------------------------------------------------------------------

GRUB_WORDS = ["menuentry ", "submenu ", "if ", "then ", "else ", "fi", "linux ", "multiboot2 ", "module2 "]
GRUB_WORDS += ["set default=", "blscfg", "source ", "function ", "for ", "do ", "done", "${", "--id "]
GRUBBISH = st.lists(
    st.sampled_from([*"{}'\";\\$>\n \t#=()-[]!&|abcdefilmnorstuxz012", *GRUB_WORDS]), max_size=200
).map("".join)
RANDOM = st.one_of(st.text(max_size=300), GRUBBISH)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grub_cfg=RANDOM, default_grub=RANDOM, env=st.binary(max_size=200), extra=RANDOM)
def test_garbage_never_raises(grub_cfg: str, default_grub: str, env: bytes, extra: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, "boot/grub/grub.cfg", grub_cfg)
        write(root, "boot/grub/grubenv", env)
        write(root, "etc/default/grub", default_grub)
        write(root, "boot/loader/entries/x.conf", extra)
        write(root, "boot/efi/EFI/xen/xen.cfg", extra)
        nb = boot(root)
        assert isinstance(nb.why, str)
        for e in nb.entries:
            assert isinstance(e.cmdline, str)


@settings(max_examples=50, deadline=None)
@given(boot_option=st.binary(max_size=120), order=st.binary(max_size=8))
def test_garbage_efivars_never_raise(boot_option: bytes, order: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write(root, "boot/efi/EFI/xen/xen.cfg", "[global]\ndefault=a\n[a]\nkernel=vmlinuz-1 ro\n")
        write(root, f"sys/firmware/efi/efivars/BootOrder-{GLOBAL}", order)
        write(root, f"sys/firmware/efi/efivars/Boot0000-{GLOBAL}", boot_option)
        assert boot(root).entry is not None


def test_plain_linux_entry_staleness(debian: Path) -> None:
    set_default(debian, "0", "0")
    conf = debian / "etc/default/grub"
    conf.write_text(
        conf.read_text().replace(
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"'
        )
    )
    [stale] = boot(debian).stale
    assert stale.kind == "cmdline" and stale.missing == ("splash",)


XCPNG = FIXTURES / "xcpng-8.3-malformed-hide"


def test_xcpng_uefi_menu_on_the_esp_and_its_symlinked_kernel() -> None:
    # host-installer writes the whole menu to EFI/xenserver/grub.cfg on UEFI; the entries load
    # /boot/vmlinuz-4.19-xen, a link to vmlinuz-4.19.0+1 (XCP-ng's kernel.spec)
    nb = boot(XCPNG)
    assert nb.bootloader == "grub" and nb.entry is not None
    assert (nb.entry.title, nb.entry.menu_path, nb.entry.is_xen) == ("XCP-ng", "0", True)
    assert nb.entry.kernel_path == "boot/vmlinuz-4.19-xen"
    assert nb.entry.kernel_release == "4.19.0+1"
    assert nb.entry.cmdline.endswith("xen-pciback.hide=(0000:04:00.0)(82.0.0)")
    assert nb.entry.xen_cmdline is not None and nb.entry.xen_cmdline.startswith("dom0_mem=8192M")
    assert nb.entry.evidence[0].path == "boot/efi/EFI/xenserver/grub.cfg"
    assert [e.title for e in nb.entries][:2] == ["XCP-ng", "XCP-ng (Serial)"]
    assert not nb.stale


def test_xenserver_esp_menu_wins_over_a_leftover_boot_grub(tmp_path: Path) -> None:
    # xen-cmdline (xcp/bootloader.py loadExisting) edits the ESP file first: the doctor reads the same
    root = tmp_path / "root"
    shutil.copytree(XCPNG, root, symlinks=True)
    write(root, "boot/grub/grub.cfg", "menuentry 'old BIOS menu' {\n\tlinux /boot/vmlinuz-4.19-xen ro\n}\n")
    nb = boot(root)
    assert nb.entry is not None and nb.entry.title == "XCP-ng"
    assert nb.entry.evidence[0].path == "boot/efi/EFI/xenserver/grub.cfg"


def test_xcpng_override_entry_in_grubenv_picks_the_entry(tmp_path: Path) -> None:
    # readGrub2's boilerplate: `if [ -n "$override_entry" ]; then set default=$override_entry; fi`,
    # with grubenv next to the ESP grub.cfg ($prefix/grubenv)
    root = tmp_path / "root"
    shutil.copytree(XCPNG, root, symlinks=True)
    write(root, "boot/efi/EFI/xenserver/grubenv", grubenv(override_entry="1"))
    nb = boot(root)
    assert nb.entry is not None and nb.entry.title == "XCP-ng (Serial)"
