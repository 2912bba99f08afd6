"""The commands fixes name follow the root's platform when no image shows which tool built it:
Alpine rebuilds with mkinitfs, Arch with mkinitcpio -P, and both regenerate GRUB's menu with
grub-mkconfig -o /boot/grub/grub.cfg (neither has Debian's update-grub nor Fedora's grub2-mkconfig)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback_doctor.boot.analysis import analyse
from pciback_doctor.facts.system import Options, collect
from pciback_doctor.fixes import grub_update, rebuild_command

K = "6.6.14-0-lts"


@pytest.mark.parametrize(
    ("os_release", "rebuild", "grub"),
    [
        (
            'ID=alpine\nPRETTY_NAME="Alpine Linux v3.19"\n',
            f"mkinitfs {K}",
            "grub-mkconfig -o /boot/grub/grub.cfg",
        ),
        ('ID=arch\nPRETTY_NAME="Arch Linux"\n', "mkinitcpio -P", "grub-mkconfig -o /boot/grub/grub.cfg"),
        ("ID=endeavouros\nID_LIKE=arch\n", "mkinitcpio -P", "grub-mkconfig -o /boot/grub/grub.cfg"),
        (
            'ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
            f"update-initramfs -u -k {K}",
            "update-grub",
        ),
        ("ID=ubuntu\nID_LIKE=debian\n", f"update-initramfs -u -k {K}", "update-grub"),
        (
            'ID=fedora\nPRETTY_NAME="Fedora Linux 40"\n',
            f"dracut -f --kver {K}",
            "grub2-mkconfig -o /boot/grub2/grub.cfg",
        ),
        ("ID=xenenterprise\n", f"dracut -f --kver {K}", "grub-mkconfig -o /boot/grub/grub.cfg"),
        (
            "ID=gentoo\n",
            f"rebuild the initramfs for {K} with your distribution's tool",
            "grub-mkconfig -o /boot/grub/grub.cfg",
        ),
    ],
)
def test_commands_follow_the_platform(tmp_path: Path, os_release: str, rebuild: str, grub: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text(os_release)
    analysis = analyse(collect(Options(root=str(tmp_path), kernel=K)))
    assert analysis.image is None  # nothing shows which tool built the image: the platform decides
    assert rebuild_command(analysis) == rebuild
    assert grub_update(analysis) == grub


def test_the_images_own_generator_wins(tmp_path: Path) -> None:
    """A generator named by the caller (the image's) is never replaced by the platform's default."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=debian\n")
    analysis = analyse(collect(Options(root=str(tmp_path), kernel=K)))
    assert rebuild_command(analysis, "dracut") == f"dracut -f --kver {K}"
