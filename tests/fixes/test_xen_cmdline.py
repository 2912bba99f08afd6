"""XCP-ng / XenServer: the dom0 command-line fix is `xen-cmdline --set-dom0`, and the simulation applies
what that tool does to grub.cfg (fixes/xen_cmdline.py) before it offers the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import FIXTURES, copy_fixture, devices, doctor
from pciback_doctor.boot.analysis import analyse
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.fixes import offers
from pciback_doctor.fixes.xen_cmdline import XEN_CMDLINE, edited, operations, set_dom0
from pciback_doctor.model import Verdict

XCPNG = "xcpng-8.3-malformed-hide"
ESP_CFG = "boot/efi/EFI/xenserver/grub.cfg"
NVME = "0000:82:00.0"
WANTED = "xen-pciback.hide=(0000:04:00.0)(0000:82:00.0)"

MENU = """set default=0
menuentry 'XCP-ng' {
\tsearch --label --set root root-x
\tmultiboot2 /boot/xen.gz dom0_mem=4G
\tmodule2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro quiet xen-pciback.hide=(82.0.0)
\tmodule2 /boot/initrd-4.19-xen.img
}
menuentry 'XCP-ng (Serial)' {
\tmultiboot2 /boot/xen.gz com1=115200,8n1 dom0_mem=4G
\tmodule2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro   console=hvc0
\tmodule2 /boot/initrd-4.19-xen.img
}
menuentry 'XCP-ng in Safe Mode' {
\tmultiboot2 /boot/xen.gz nosmp
\tmodule2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro xen-pciback.hide=(82.0.0)
\tmodule2 /boot/initrd-4.19-xen.img
}
menuentry 'Other' {
\txen_hypervisor /boot/xen.gz
\txen_module /boot/vmlinuz-4.19-xen ro
}
"""


def _kernel_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [lines[i].strip() for i in (4, 9, 14, 19)]


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        # --set-dom0: the key's old words go, the new one is appended; xe and xe-serial only
        (
            [("--set-dom0", ["xen-pciback.hide=(0000:82:00.0)"])],
            [
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro quiet xen-pciback.hide=(0000:82:00.0)",
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro console=hvc0 xen-pciback.hide=(0000:82:00.0)",
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro xen-pciback.hide=(82.0.0)",
                "xen_module /boot/vmlinuz-4.19-xen ro",
            ],
        ),
        # --delete-dom0 KEY: `KEY=…` and a bare KEY both go
        (
            [("--delete-dom0", ["quiet"]), ("--delete-dom0", ["xen-pciback.hide"])],
            [
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro",
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro console=hvc0",
                "module2 /boot/vmlinuz-4.19-xen root=LABEL=root-x ro xen-pciback.hide=(82.0.0)",
                "xen_module /boot/vmlinuz-4.19-xen ro",
            ],
        ),
    ],
)
def test_edits_only_the_entries_xen_cmdline_labels(
    ops: list[tuple[str, list[str]]], expected: list[str]
) -> None:
    after = edited(MENU, "XCP-ng", ops)
    assert _kernel_lines(after) == expected
    # the hypervisor lines and the initrd modules are untouched
    assert [line for line in after.split("\n") if "multiboot2" in line or "initrd" in line] == [
        line for line in MENU.split("\n") if "multiboot2" in line or "initrd" in line
    ]


def test_the_brand_decides_which_entry_is_xe() -> None:
    # a XenServer grub.cfg read with XenServer's brand: the 'XCP-ng' entry is no `xe` entry
    after = edited(MENU, "XenServer", [("--set-dom0", ["a=1"])])
    kernel = _kernel_lines(after)
    assert not kernel[0].endswith("a=1") and kernel[1].endswith("a=1")


def test_the_printed_command_reads_back_as_its_operation() -> None:
    command = set_dom0(WANTED)
    assert command == f"{XEN_CMDLINE} --set-dom0 '{WANTED}'"
    assert operations(command) == [("--set-dom0", [WANTED])]
    assert operations("update-grub") == [] and operations(f"{XEN_CMDLINE} --get-dom0 x") == []


def test_xcpng_fixture_findings_and_predictions() -> None:
    """fixtures/xcpng-8.3-malformed-hide/README.md: what the doctor says about that dom0."""
    run = doctor("--root", str(FIXTURES / XCPNG), "--format", "json")
    data = run.json()
    assert data["target"]["platform"] == {"id": "xcp-ng", "name": "XCP-ng 8.3.0"}
    assert data["target"]["kernel"] == "4.19.0+1"
    assert data["backend"]["mode"] == "builtin"
    devs = devices(run)
    assert devs["0000:04:00.0"]["prediction"] == "not-claimed" and devs["0000:04:00.0"]["winner"] == "igb"
    pb201 = next(f for f in data["findings"] if f["id"] == "PB201")
    assert pb201["severity"] == "error"
    assert "at character 18" in pb201["message"]  # the README's expectations, held here
    assert "did you mean (0000:82:00.0)? — 0000:82:00.0 is here (144d:a808, nvme)" in pb201["message"]
    assert "Looks like pciback driver not loaded" in pb201["message"]
    assert pb201["evidence"][0] == {
        "path": ESP_CFG,
        "line": 17,
        "text": "xen-pciback.hide=(0000:04:00.0)(82.0.0)",
    }
    assert pb201["fixes"][0]["description"].endswith("e.g. (0000:04:00.0)(0000:82:00.0)")


def test_xcpng_fix_is_xen_cmdline_and_is_proven(tmp_path: Path) -> None:
    a = analyse(collect(Options(root=str(FIXTURES / XCPNG), devices=(NVME,))))
    assert {d.prediction.verdict for d in a.devices} == {Verdict.NOT_CLAIMED}
    found = {o.strategy: o for o in offers(a)}
    cmdline = found["cmdline"]
    assert cmdline.offered and cmdline.fix is not None and cmdline.outcome is not None
    assert cmdline.fix.files == ()  # nothing in etc/default/grub: XCP-ng has no grub-mkconfig workflow
    assert cmdline.fix.commands == (f"{XEN_CMDLINE} --set-dom0 '{WANTED}'",)
    assert not any("grub" in c.split()[0] for o in found.values() if o.fix for c in o.fix.commands)
    after = {str(d.bdf): d.prediction for d in cmdline.outcome.after.devices}
    assert {b: (p.verdict, p.phase) for b, p in after.items()} == {
        "0000:04:00.0": (Verdict.CLAIMED, "kernel"),
        NVME: (Verdict.CLAIMED, "kernel"),
    }
    # the simulated next boot is read from the grub.cfg the tool leaves behind
    assert cmdline.outcome.after.system.cmdline is not None
    assert cmdline.outcome.after.system.cmdline.text.endswith(WANTED)

    # and the same edit made for real gives the same answer, with PB201 gone
    root = copy_fixture(XCPNG, tmp_path)
    cfg = root / ESP_CFG
    cfg.write_text(edited(cfg.read_text(), "XCP-ng", operations(cmdline.fix.commands[0])))
    run = doctor("--root", str(root), "--device", NVME, "--format", "json")
    assert {b: d["prediction"] for b, d in devices(run).items()} == {
        "0000:04:00.0": "claimed",
        NVME: "claimed",
    }
    assert "PB201" not in [f["id"] for f in run.json()["findings"]]
    assert run.code == 0 or all(f["severity"] != "error" for f in run.json()["findings"])


def test_xen_cmdline_is_not_offered_when_the_default_entry_is_one_it_does_not_edit(tmp_path: Path) -> None:
    # `set default=2` boots "XCP-ng in Safe Mode": xen-cmdline edits only the xe / xe-serial entries,
    # so the simulation sees the same command line and the fix is not offered as proven
    root = copy_fixture(XCPNG, tmp_path)
    cfg = root / ESP_CFG
    cfg.write_text(cfg.read_text().replace("set default=0", "set default=2"))
    a = analyse(collect(Options(root=str(root), devices=(NVME,))))
    cmdline = next(o for o in offers(a) if o.strategy == "cmdline")
    assert not cmdline.offered
    assert cmdline.why_not is not None and cmdline.why_not.startswith("simulated: 0 of 1 claimed")


def test_hide_put_on_xens_line_is_moved_with_xen_cmdline(tmp_path: Path) -> None:
    # `xen-cmdline --set-xen` instead of `--set-dom0`: the token sits on the multiboot2 line (PB606);
    # the fix is the same tool, and running its commands leaves both devices claimed
    root = copy_fixture(XCPNG, tmp_path)
    cfg = root / ESP_CFG
    text = cfg.read_text().replace(" xen-pciback.hide=(0000:04:00.0)(82.0.0)", "")
    cfg.write_text(text.replace("vga=mode-0x0311", f"vga=mode-0x0311 {WANTED}"))
    run = doctor("--root", str(root), "--format", "json")
    pb606 = next(f for f in run.json()["findings"] if f["id"] == "PB606")
    commands = pb606["fixes"][0]["commands"]
    assert commands == [
        f"{XEN_CMDLINE} --delete-xen xen-pciback.hide",
        f"{XEN_CMDLINE} --set-dom0 '{WANTED}'",
    ]
    assert not any("etc/default/grub" in f["description"] for f in pb606["fixes"])
    for command in commands:
        cfg.write_text(edited(cfg.read_text(), "XCP-ng", operations(command)))
    after = doctor("--root", str(root), "--format", "json")
    assert {b: d["prediction"] for b, d in devices(after).items()} == {
        "0000:04:00.0": "claimed",
        NVME: "claimed",
    }
    assert "PB606" not in [f["id"] for f in after.json()["findings"]]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("(0:0:0:0)", "0:0:0:0 is a SCSI address (host:channel:target:lun, as lsscsi prints it)"),
        ("(0000:04:00.0)(82.0.0)", "did you mean (0000:82:00.0)? — 0000:82:00.0 is here"),
        ("(04.00.0)", "did you mean (0000:04:00.0)? — 0000:04:00.0 is here (8086:1521, igb)"),
        ("(05.00.0)", "did you mean (0000:05:00.0)?"),  # no such device here: no claim that it is
        ("(0000:04:00.0),(0000:82:00.0)", ""),  # a comma: no misspelt address to name
    ],
)
def test_pb201_names_the_address_mistakes_seen_on_xcpng(value: str, says: str) -> None:
    run = doctor(
        "--root", str(FIXTURES / XCPNG), "--cmdline", f"ro xen-pciback.hide={value}", "--format", "json"
    )
    message = next(f for f in run.json()["findings"] if f["id"] == "PB201")["message"]
    assert says in message
    assert ("is here" in message) == ("is here" in says)
    assert ("SCSI" in message) == ("SCSI" in says)
    assert "Looks like pciback driver not loaded" in message  # the backend is built in


@pytest.mark.parametrize(
    ("cfg", "brand"),
    [
        ("boot/grub/grub.cfg", "XCP-ng"),  # a BIOS install (host-installer: boot/grub/grub.cfg)
        (ESP_CFG, "XenServer"),  # XenServer 8: same layout and tool, its own brand on the entries
    ],
)
def test_bios_layout_and_xenserver_brand(tmp_path: Path, cfg: str, brand: str) -> None:
    root = copy_fixture(XCPNG, tmp_path)
    text = (root / ESP_CFG).read_text().replace("'XCP-ng", f"'{brand}")
    (root / ESP_CFG).unlink()
    (root / cfg).parent.mkdir(parents=True, exist_ok=True)
    (root / cfg).write_text(text)
    inventory = root / "etc/xensource-inventory"
    inventory.write_text(inventory.read_text().replace("'XCP-ng'", f"'{brand}'"))
    (root / "etc/os-release").write_text(f'NAME="{brand}"\nID="xenenterprise"\nPRETTY_NAME="{brand} 8"\n')
    a = analyse(collect(Options(root=str(root), devices=(NVME,))))
    assert a.system.platform.id == ("xcp-ng" if brand == "XCP-ng" else "xenserver")
    cmdline = next(o for o in offers(a) if o.strategy == "cmdline")
    assert cmdline.offered and cmdline.fix is not None
    assert cmdline.fix.commands == (f"{XEN_CMDLINE} --set-dom0 '{WANTED}'",)
    assert cmdline.outcome is not None and cmdline.outcome.passes
    assert cmdline.outcome.after.system.root.read_text(cfg) != text  # the simulated tool edited this file


WORDS = st.text(alphabet='ab=x"() \t.-', max_size=12)
LINES = st.one_of(
    st.builds(
        lambda t: f"menuentry '{t}' {{",
        st.sampled_from(["XCP-ng", "XCP-ng (Serial)", "XCP-ng in Safe Mode", "x"]),
    ),
    st.builds(lambda w: f"\tmultiboot2 /boot/xen.gz {w}", WORDS),
    st.builds(lambda w: f"\tmodule2 /boot/vmlinuz-4.19-xen {w}", WORDS),
    st.just("}"),
    st.text(max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(LINES, max_size=14), value=st.sampled_from(["(0000:04:00.0)", "", "(a)(b)"]))
def test_xen_cmdline_model_is_total_and_idempotent(lines: list[str], value: str) -> None:
    # values as the fix composes them: no space (a space would split the token on the next read, in
    # the real tool's getKernelArgs as here)
    text = "\n".join(lines)
    ops = [("--set-dom0", [f"xen-pciback.hide={value}"])]
    once = edited(text, "XCP-ng", ops)
    assert once.count("\n") == text.count("\n")  # lines are edited in place, never added or dropped
    assert edited(once, "XCP-ng", ops) == once  # running the same command again changes nothing
    changed = [(a, b) for a, b in zip(text.split("\n"), once.split("\n"), strict=True) if a != b]
    assert all(b.strip().startswith(("module2", "multiboot2")) for _, b in changed)


def test_simulated_xen_cmdline_moves_the_token_off_xens_line(tmp_path: Path) -> None:
    from pciback_doctor.fixes.simulate import simulate
    from pciback_doctor.model import Fix

    root = copy_fixture(XCPNG, tmp_path)
    cfg = root / ESP_CFG
    text = cfg.read_text().replace(" xen-pciback.hide=(0000:04:00.0)(82.0.0)", "")
    cfg.write_text(text.replace("vga=mode-0x0311", f"vga=mode-0x0311 {WANTED}"))
    a = analyse(collect(Options(root=str(root))))
    assert a.system.xen_cmdline is not None and WANTED in a.system.xen_cmdline.text.split()
    commands = (f"{XEN_CMDLINE} --delete-xen xen-pciback.hide", set_dom0(WANTED))
    after = simulate(a, Fix("cmdline", "", (), commands))
    assert after.system.xen_cmdline is not None and "xen-pciback.hide" not in after.system.xen_cmdline.text
    assert after.system.cmdline is not None and after.system.cmdline.text.endswith(WANTED)
    assert {str(d.bdf): d.prediction.verdict for d in after.devices} == {
        "0000:04:00.0": Verdict.CLAIMED,
        NVME: Verdict.CLAIMED,
    }
