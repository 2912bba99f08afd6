"""Advice that never makes a boot worse (issue 11): fixes compose with what is there, are proven on a
model copy of the system before they are offered, and are printed once for the whole system."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import FIXTURES, copy_fixture, doctor

BUILTIN = "CONFIG_XEN=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN_PCIDEV_BACKEND=y\n"


def test_stale_grub_cfg_only_gets_update_grub(tmp_path: Path) -> None:
    # etc/default/grub already names the device; only grub.cfg is old: the answer is update-grub
    root = copy_fixture("boot-stale-grub", tmp_path)
    (root / "boot/config-6.1.0-18-amd64").write_text(BUILTIN)
    run = doctor("fix", "--root", str(root))
    assert run.code == 0, run.err
    assert "update-grub" in run.out and "1 of 1 claimed" in run.out
    assert "---" not in run.out  # no file to change


def test_cmdline_fix_keeps_the_hidden_device_and_uses_the_xen_only_variable(tmp_path: Path) -> None:
    # GRUB_CMDLINE_LINUX_XEN_REPLACE carries (0000:05:00.0); adding 06:00.0 must keep it, in one token,
    # in the Xen-only variable (not GRUB_CMDLINE_LINUX_DEFAULT, which the non-Xen entries use too)
    root = copy_fixture("boot-debian-grub-xen", tmp_path)
    (root / "boot/config-6.1.0-17-amd64").write_text(BUILTIN)
    run = doctor("fix", "--root", str(root), "--device", "0000:06:00.0", "--write")
    assert run.code == 0, run.err
    assert "2 of 2 claimed" in run.out
    text = (root / "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX_XEN_REPLACE="xen-pciback.hide=(0000:05:00.0)(0000:06:00.0)"' in text
    assert text.count("pciback.hide=") == 1
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in text


def test_second_token_never_drops_a_device(tmp_path: Path) -> None:
    # (05:00.0) without a domain and (0000:05:00.0) are one device; the fix writes one value
    root = copy_fixture("builtin-cmdline-hide", tmp_path)
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_text(
        'GRUB_CMDLINE_LINUX="xen-pciback.hide=(05:00.0)"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    )
    (root / "proc/cmdline").write_text("ro quiet xen-pciback.hide=(05:00.0)\n")
    run = doctor("fix", "--root", str(root), "--device", "0000:00:14.0", "--strategy", "cmdline", "--write")
    assert run.code == 0, run.err
    text = (root / "etc/default/grub").read_text()
    assert text.count("pciback.hide=") == 1
    assert "xen-pciback.hide=(0000:05:00.0)(0000:00:14.0)" in text


def test_modprobe_fix_keeps_the_admins_other_options(tmp_path: Path) -> None:
    root = copy_fixture("module-modprobe-options", tmp_path)
    conf = root / "etc/modprobe.d/xen-pciback.conf"
    conf.write_text("options xen-pciback permissive=1\noptions xen_pciback passthrough=1 hide=(05:00.0)\n")
    (root / "etc/modprobe.d/zz-late.conf").write_text(
        "# later\x0c kept\x0b as\x85 is\u2028 here\noptions xen-pciback hide=(0000:06:00.0)\n"
    )
    (root / "etc/initramfs-tools").mkdir(parents=True)
    (root / "etc/initramfs-tools/modules").write_text("")
    run = doctor("fix", "--root", str(root), "--strategy", "modprobe", "--write")
    assert run.code == 0, run.err
    lines = conf.read_text().splitlines()
    assert "options xen-pciback permissive=1" in lines
    assert "options xen_pciback passthrough=1" in lines
    assert "options xen-pciback hide=(0000:05:00.0)(0000:06:00.0)" in lines
    late = (root / "etc/modprobe.d/zz-late.conf").read_text()
    assert late.startswith("# later\x0c kept\x0b as\x85 is\u2028 here\n")  # only a newline ends a line
    assert "\noptions xen-pciback hide=" not in late  # the loser that would have won is retired


def test_late_binding_not_offered_when_pciback_cannot_register(tmp_path: Path) -> None:
    root = copy_fixture("malformed-hide", tmp_path)
    run = doctor("fix", "--root", str(root), "--strategy", "late-binding")
    assert run.code == 2
    assert "never registers" in run.err
    assert "cmdline" in run.err  # what does work


def test_one_fix_per_strategy_printed_once(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    run = doctor(
        "--root", str(root), "--device", "0000:01:00.0", "--device", "0000:01:00.1", "--format", "json"
    )
    with_fixes = [f for f in run.json()["findings"] if any(fix["files"] for fix in f["fixes"])]
    assert len(with_fixes) == 1
    strategies = [fix["strategy"] for fix in with_fixes[0]["fixes"]]
    assert len(strategies) == len(set(strategies))
    late = next(fix for fix in with_fixes[0]["fixes"] if fix["strategy"] == "late-binding")
    script = late["files"][0]["content"]
    assert all(b in script for b in ("0000:05:00.0", "0000:01:00.0", "0000:01:00.1"))
    assert all("claimed" in fix["description"] for fix in with_fixes[0]["fixes"])


def _many_devices(root: Path, n: int) -> list[str]:
    bdfs = [f"0000:{1 + i // 32:02x}:{i % 32:02x}.0" for i in range(n)]
    (root / "proc/cmdline").write_text("ro quiet\n")
    return [arg for b in bdfs for arg in ("--device", b)]


def test_fix_generation_is_linear_in_devices(tmp_path: Path) -> None:
    root = copy_fixture("classic-pciback-hide", tmp_path)
    timings = []
    for n in (100, 400):
        start = time.perf_counter()
        run = doctor("fix", "--root", str(root), "--strategy", "late-binding", *_many_devices(root, n))
        timings.append(time.perf_counter() - start)
        assert run.code == 0, run.err
    assert timings[1] < timings[0] * 4 * 2.5  # 4x the devices: far from 16x


# -- the property: what the simulation predicts is what a real --write (plus the same commands) gives -


FIXTURE_ROOTS = [p.name for p in sorted(FIXTURES.iterdir()) if p.is_dir()]
EXTRA = ["0000:00:14.0", "0000:01:00.0", "0000:06:00.0", "0000:00:1c.0"]


def _verdicts(run_json: dict[str, object]) -> dict[str, str]:
    return {d["bdf"]: d["prediction"] for d in run_json["devices"]}  # type: ignore[index, union-attr]


def _image(base: Path, generator: str) -> str:
    """An image holding e1000e (udev loads it there) and no xen-pciback, by the generator's layout."""
    import gzip

    from cpio_writer import file, newc

    mods = "usr/lib/modules/6.1.0-56-amd64/kernel/drivers"
    entries = [file(f"{mods}/net/ethernet/intel/e1000e/e1000e.ko", b"\x7fELF")]
    if generator == "dracut":
        entries += [
            file("usr/lib/dracut/modules.txt", b"base\nudev-rules\nkernel-modules\n"),
            file("usr/lib/dracut/build-parameter.txt", b"--kver '6.1.0-56-amd64' --hostonly"),
            file("usr/lib/dracut/hooks/cmdline/01-parse-kernel.sh"),
        ]
    else:
        entries += [
            file("conf/initramfs.conf", b"MODULES=most\n"),
            file("scripts/functions"),
            file("scripts/init-top/udev"),
        ]
    path = base / f"{generator}.img"
    path.write_bytes(gzip.compress(newc(entries)))
    return str(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fixture=st.sampled_from(FIXTURE_ROOTS),
    extra=st.lists(st.sampled_from(EXTRA), max_size=2, unique=True),
    cmdline_hide=st.sampled_from(
        ["", " xen-pciback.hide=(05:00.0)", " xen-pciback.hide=(0000:05:00.0)(06:00.*)"]
    ),
    modprobe_hide=st.sampled_from(["", "options xen-pciback permissive=1 hide=(0000:05:00.0)\n"]),
    builtin=st.booleans(),
    image=st.sampled_from(["", "initramfs-tools", "dracut"]),
)
def test_simulation_agrees_with_a_real_write(
    tmp_path_factory: pytest.TempPathFactory,
    fixture: str,
    extra: list[str],
    cmdline_hide: str,
    modprobe_hide: str,
    builtin: bool,
    image: str,
) -> None:
    """For every fix the doctor offers: after a real `fix --write` on a copy (and the printed commands,
    as the model runs them), every wanted device is claimed and none is worse off than before."""
    from pciback_doctor.boot.analysis import analyse
    from pciback_doctor.facts.system import Options, collect
    from pciback_doctor.fixes import DEFAULT_GRUB, EDITABLE, cmdline_token, failing, offers
    from pciback_doctor.fixes.apply import write
    from pciback_doctor.fixes.simulate import outcome, simulate
    from pciback_doctor.model import Fix, Verdict

    base = tmp_path_factory.mktemp("sim")
    root = copy_fixture(fixture, base)
    if (root / "proc/cmdline").exists():
        (root / "proc/cmdline").write_text("ro quiet" + cmdline_hide + "\n")
    if modprobe_hide:
        (root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/modprobe.d/site.conf").write_text(modprobe_hide)
    initramfs = _image(base, image) if image else None
    opts = Options(root=str(root), devices=tuple(extra), initramfs=initramfs)
    if builtin:
        for config in (root / "boot").glob("config-*"):
            config.write_text(BUILTIN)
        release = collect(opts, EDITABLE).release
        if release and not list((root / "boot").glob("config-*")):
            # the bootloader fixtures carry no kernel config: give the next boot's kernel one
            (root / "boot").mkdir(exist_ok=True)
            (root / f"boot/config-{release}").write_text(BUILTIN)
    before = analyse(collect(opts, EDITABLE))
    for offer in offers(before):
        if not offer.offered or offer.fix is None or offer.outcome is None:
            continue
        event(f"offered and written: {offer.strategy}")
        trial = base / f"{fixture}-{offer.strategy}"
        shutil.copytree(root, trial, symlinks=True)
        t_opts = Options(root=str(trial), devices=tuple(extra), initramfs=initramfs)
        t_before = analyse(collect(t_opts, EDITABLE))
        write(t_before.system.root, offer.fix.files, t_before.system.files, base / f"bak-{offer.strategy}")
        written = analyse(collect(t_opts, EDITABLE))
        # the printed commands (update-grub, the image rebuild) as the model runs them, and the
        # by-hand step of a cmdline fix no file carries (grubby, xen.cfg, a given command line)
        by_hand = None
        if offer.strategy == "cmdline" and not any(c.path == DEFAULT_GRUB for c in offer.fix.files):
            by_hand = cmdline_token(before, failing(before))
        real = outcome(before, simulate(written, Fix("commands", "", (), offer.fix.commands), by_hand))
        assert real.passes, (offer.strategy, real.unclaimed, real.worse)
        predicted = {d.bdf: d.prediction for d in offer.outcome.after.devices}
        agreed = {d.bdf: d.prediction for d in real.after.devices}
        for d in before.devices:
            if d.bdf in offer.outcome.absent:  # not in sysfs: nothing can claim it, no fix is held to
                assert predicted[d.bdf].verdict is agreed[d.bdf].verdict is Verdict.UNKNOWN
                continue
            assert predicted[d.bdf].verdict is Verdict.CLAIMED
            assert (agreed[d.bdf].verdict, agreed[d.bdf].phase) == (
                predicted[d.bdf].verdict,
                predicted[d.bdf].phase,
            )
        # and the next check shows no device worse off than before
        check = {d.bdf: d.prediction.verdict for d in written.devices}
        for d in before.devices:
            if d.prediction.verdict is Verdict.CLAIMED:
                assert check.get(d.bdf) is Verdict.CLAIMED, (offer.strategy, d.bdf)


# -- findings agree with each other and with the prediction -------------------------------------------


def _module_root(tmp_path: Path, modprobe: str) -> tuple[Path, Path]:
    """Debian's modular backend with this modprobe.d, and an initramfs-tools image without e1000e."""
    import gzip

    from cpio_writer import file, newc

    root = copy_fixture("module-modprobe-options", tmp_path)
    (root / "etc/modprobe.d/xen-pciback.conf").write_text(modprobe)
    img = tmp_path / "initrd.img"
    entries = [
        file("conf/initramfs.conf", b"MODULES=most\n"),
        file("scripts/functions"),
        file("scripts/init-top/udev"),
    ]
    img.write_bytes(gzip.compress(newc(entries)))
    return root, img


def _check(root: Path, img: Path, *more: str) -> dict[str, object]:
    run = doctor(
        "--root", str(root), "--initramfs", str(img), "--cmdline", "ro quiet", "--format", "json", *more
    )
    return run.json()  # type: ignore[no-any-return]


def test_classic_options_through_the_alias_are_not_an_error(tmp_path: Path) -> None:
    root, img = _module_root(
        tmp_path, "alias pciback xen_pciback\noptions pciback hide=(05:00.0)\nsoftdep e1000e pre: pciback\n"
    )
    report = _check(root, img)
    assert report["devices"][0]["prediction"] == "claimed"  # type: ignore[index]
    pb105 = [f for f in report["findings"] if f["id"] == "PB105"]  # type: ignore[attr-defined]
    assert pb105 and all(f["severity"] == "info" for f in pb105)


@pytest.mark.parametrize(
    "rule",
    [
        "install e1000e { /sbin/modprobe xen-pciback; /sbin/modprobe --ignore-install e1000e $CMDLINE_OPTS; }",
        "install e1000e /sbin/modprobe xen-pciback && /sbin/modprobe --ignore-install e1000e",
        'install e1000e (modprobe "xen_pciback"); exec modprobe -i e1000e',
    ],
)
def test_install_rules_read_as_sh_runs_them(tmp_path: Path, rule: str) -> None:
    root, img = _module_root(tmp_path, f"options xen-pciback hide=(0000:05:00.0)\n{rule}\n")
    report = _check(root, img)
    assert report["devices"][0]["prediction"] == "claimed"  # type: ignore[index]
    assert "PB304" not in [f["id"] for f in report["findings"]]  # type: ignore[attr-defined]


def test_same_devices_spelled_differently_do_not_conflict(tmp_path: Path) -> None:
    root, img = _module_root(
        tmp_path, "options xen-pciback hide=(0000:05:00.0)\nsoftdep e1000e pre: xen-pciback\n"
    )
    run = doctor(
        "--root",
        str(root),
        "--initramfs",
        str(img),
        "--cmdline",
        "xen-pciback.hide=(05:00.0)",
        "--format",
        "json",
    )
    assert "PB204" not in [f["id"] for f in run.json()["findings"]]
    run = doctor(
        "--root",
        str(root),
        "--initramfs",
        str(img),
        "--cmdline",
        "xen-pciback.hide=(06:00.0)",
        "--format",
        "json",
    )
    assert "PB204" in [f["id"] for f in run.json()["findings"]]


def test_hide_on_xens_own_line_is_reported(tmp_path: Path) -> None:
    root, img = _module_root(tmp_path, "softdep e1000e pre: xen-pciback\n")
    report = _check(
        root, img, "--xen-cmdline", "dom0_mem=4G xen-pciback.hide=(05:00.0)", "--device", "0000:05:00.0"
    )
    pb606 = next(f for f in report["findings"] if f["id"] == "PB606")  # type: ignore[attr-defined]
    assert pb606["severity"] == "error" and "dom0 never sees" in pb606["message"]


def test_xencommons_backend_modules_loop_is_a_loader(tmp_path: Path) -> None:
    root, img = _module_root(tmp_path, "options xen-pciback hide=(0000:05:00.0)\n")
    (root / "etc/init.d").mkdir(parents=True)
    (root / "etc/init.d/xencommons").write_text(
        '#!/bin/bash\nBACKEND_MODULES="xen-evtchn xen-gntdev xen-pciback"\n'
        "do_start () {\n\tlocal mod\n"
        '\tfor mod in $BACKEND_MODULES ; do modprobe "$mod" &>/dev/null ; done\n}\n'
    )
    report = _check(root, img)
    race = next(f for f in report["findings"] if f["id"] == "PB305")  # type: ignore[attr-defined]
    assert race["evidence"][0]["path"] == "etc/init.d/xencommons" and race["evidence"][0]["line"] == 2
    (root / "etc/default").mkdir()
    (root / "etc/default/xencommons").write_text('BACKEND_MODULES="xen-evtchn"\n')  # the admin's list wins
    assert "PB305" not in [f["id"] for f in _check(root, img)["findings"]]  # type: ignore[attr-defined]


def test_severity_follows_effect(tmp_path: Path) -> None:
    # a broken install rule next to a softdep that works, and a malformed value a later one replaces
    root, img = _module_root(
        tmp_path,
        "options xen-pciback hide=(05:00.0),(06:00.0)\nsoftdep e1000e pre: xen-pciback\n"
        "install e1000e /sbin/modprobe pciback ; /sbin/modprobe --ignore-install e1000e\n",
    )
    run = doctor(
        "--root",
        str(root),
        "--initramfs",
        str(img),
        "--cmdline",
        "xen-pciback.hide=(05:00.0)",
        "--format",
        "json",
    )
    report = run.json()
    assert report["devices"][0]["prediction"] == "claimed"
    severities = {f["id"]: f["severity"] for f in report["findings"]}
    assert severities["PB304"] == "warning"
    assert severities["PB201"] == "warning"
    # the same malformed value when it is the one the backend gets: an error
    run = doctor("--root", str(root), "--initramfs", str(img), "--cmdline", "ro", "--format", "json")
    assert {f["id"]: f["severity"] for f in run.json()["findings"]}["PB201"] == "error"


def test_dom0_only_token_gets_a_xen_only_variable(tmp_path: Path) -> None:
    # no *_XEN_REPLACE* variable yet: one is made, holding GRUB_CMDLINE_LINUX_DEFAULT's words (it
    # replaces them for the Xen entries), so the non-Xen entries never get the token
    root = copy_fixture("boot-debian-grub-xen", tmp_path)
    (root / "boot/config-6.1.0-17-amd64").write_text(BUILTIN)
    grub = root / "etc/default/grub"
    grub.write_text(
        grub.read_text().replace('GRUB_CMDLINE_LINUX_XEN_REPLACE="xen-pciback.hide=(0000:05:00.0)"', "")
    )
    run = doctor("fix", "--root", str(root), "--device", "0000:06:00.0", "--write")
    assert run.code == 0, run.err
    text = grub.read_text()
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n' in text
    assert (
        'GRUB_CMDLINE_LINUX_XEN_REPLACE_DEFAULT="quiet xen-pciback.hide=(0000:05:00.0)(0000:06:00.0)"\n'
        in text
    )


def test_a_hide_value_too_long_is_not_offered(tmp_path: Path) -> None:
    # 100 devices need 1,400 characters; param_set_charp takes 1,024: late binding is what works
    root = copy_fixture("classic-pciback-hide", tmp_path)
    run = doctor("fix", "--root", str(root), *_many_devices(root, 100))
    assert run.code == 0, run.err
    assert run.out.startswith("# late-binding:") and "101 of 101 claimed" in run.out
    assert "# not offered: modprobe: one hide value for all these devices is" in run.out


def test_pb105_rename_is_one_value_holding_every_device() -> None:
    # the example: `options pciback hide=(0000:00:14.0)` on a built-in backend whose command line
    # already hides 05:00.0 and 01:00.*; a second hide token would drop those (charp: last wins)
    run = doctor("--root", str(FIXTURES / "example"), "--format", "json")
    pb105 = next(f for f in run.json()["findings"] if f["id"] == "PB105")
    (fix,) = pb105["fixes"]
    assert "xen-pciback.hide=(0000:00:14.0)(0000:05:00.0)(0000:01:00.*)" in fix["description"]
    assert "replacing every" in fix["description"]


def test_a_cmdline_step_by_hand_never_drops_the_working_hide(tmp_path: Path) -> None:
    # no bootloader file the doctor edits: the token goes in by hand; until then the modprobe.d
    # hide must keep working (from the new-admin trial: it was moved out, and the device lost)
    root = copy_fixture("module-modprobe-options", tmp_path)
    before = (root / "etc/modprobe.d/xen-pciback.conf").read_text()
    run = doctor("fix", "--root", str(root), "--strategy", "cmdline", "--write")
    assert run.code == 0, run.err
    assert "by hand: put xen-pciback.hide=(0000:05:00.0)" in run.out
    assert "options xen-pciback hide=(0000:05:00.0)" in (root / "etc/modprobe.d/xen-pciback.conf").read_text()
    assert before.count("hide=") == (root / "etc/modprobe.d/xen-pciback.conf").read_text().count("hide=")


def test_a_second_file_with_the_right_lines_is_edited_once_and_kept_working(tmp_path: Path) -> None:
    # `softdep e1000e pre: xen-pciback` is no classic `pciback` rule, and both edits of one file
    # are one change (two diffs of one file could not be written)
    root = copy_fixture("classic-pciback-hide", tmp_path)
    plain = "# plain\noptions xen-pciback hide=(0000:05:00.0)\nsoftdep e1000e pre: xen-pciback\n"
    (root / "etc/modprobe.d/zz-plain.conf").write_text(plain)
    run = doctor("fix", "--root", str(root))
    assert run.out.count("+++ b/etc/modprobe.d/zz-plain.conf") == 1
    assert "disabled by pciback-doctor (no module is called pciback): softdep" not in run.out
    assert doctor("fix", "--root", str(root), "--write").code == 0
    assert "softdep e1000e pre: xen-pciback\n" in (root / "etc/modprobe.d/zz-plain.conf").read_text()
