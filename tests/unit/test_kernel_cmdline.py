"""kernel_cmdline on real /etc/default/grub files (tests/fixtures/grub/README.md)."""

import shutil

import pytest
from helpers import FIXTURES, ROOT, load_library_module, run_module

MODULE = ROOT / "plugins" / "modules" / "kernel_cmdline.py"
kc = load_library_module("kernel_cmdline")
GRUB = FIXTURES / "grub"
SEED_004 = {"cpufreq.default_governor": "performance", "intel_idle.max_cstate": 0}


@pytest.mark.parametrize(("text", "args"), [
    ("quiet splash", ["quiet", "splash"]),
    ('  a=1   b="x y"  c ', ["a=1", 'b="x y"', "c"]),
    ('dyndbg="file foo.c +p" quiet', ['dyndbg="file foo.c +p"', "quiet"]),
    ("", []),
])
def test_split_args_like_the_kernel(text, args):
    assert kc.split_args(text) == args


def test_merge_keeps_user_arguments_replaces_ours_and_never_duplicates():
    merged, added, replaced, removed = kc.merge_args(
        ["quiet", "intel_idle.max_cstate=1", "splash", "intel_idle.max_cstate=2", "console=ttyS0"],
        {"intel_idle.max_cstate": 0, "cpufreq.default_governor": "performance", "nosmt": None})
    assert merged == ["quiet", "intel_idle.max_cstate=0", "splash", "console=ttyS0",
                      "cpufreq.default_governor=performance", "nosmt"]
    assert added == ["cpufreq.default_governor=performance", "nosmt"]
    assert replaced == ["intel_idle.max_cstate=1 -> intel_idle.max_cstate=0"]
    assert removed == ["intel_idle.max_cstate=2"]


def test_debian_file_gets_the_seed_arguments_after_quiet():
    text = (GRUB / "debian12").read_text()
    new, old, value, added, _, _ = kc.update_grub_defaults(text, "GRUB_CMDLINE_LINUX_DEFAULT", SEED_004)
    assert old == "quiet"
    assert value == "quiet cpufreq.default_governor=performance intel_idle.max_cstate=0"
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet cpufreq.default_governor=performance intel_idle.max_cstate=0"\n' in new
    # every other line is untouched
    assert [line for line in new.splitlines() if "CMDLINE_LINUX_DEFAULT" not in line] == \
           [line for line in text.splitlines() if "CMDLINE_LINUX_DEFAULT" not in line]


def test_single_quotes_and_other_variables_are_kept():
    text = (GRUB / "openeuler-single-quoted").read_text()
    new, *_ = kc.update_grub_defaults(text, "GRUB_CMDLINE_LINUX", {"cpufreq.default_governor": "performance"})
    assert ("GRUB_CMDLINE_LINUX='resume=/dev/mapper/openeuler-swap rd.lvm.lv=openeuler/root "
            "rd.lvm.lv=openeuler/swap crashkernel=512M cpufreq.default_governor=performance'\n") in new
    assert "GRUB_CMDLINE_LINUX_DEFAULT" not in new
    new_default, *_ = kc.update_grub_defaults(text, "GRUB_CMDLINE_LINUX_DEFAULT", {"nosmt": None})
    assert new_default.endswith('GRUB_CMDLINE_LINUX_DEFAULT="nosmt"\n')


def test_variable_references_survive():
    text = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT quiet"\n'
    new, *_ = kc.update_grub_defaults(text, "GRUB_CMDLINE_LINUX_DEFAULT", {"nosmt": None})
    assert new == 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT quiet nosmt"\n'


def test_reboot_reasons_compare_with_the_running_kernel():
    running = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet cpufreq.default_governor=performance"
    reasons = kc.reboot_reasons(running, SEED_004, remove=["quiet"])
    assert reasons == ["intel_idle.max_cstate=0 is not on the running kernel's command line",
                       "quiet is still on the running kernel's command line"]
    assert kc.reboot_reasons(running + " intel_idle.max_cstate=0", SEED_004) == []


@pytest.fixture
def grub_files(tmp_path):
    grub = tmp_path / "grub"
    shutil.copy(GRUB / "ubuntu22-gaudi", grub)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/boot/vmlinuz ro quiet splash cpufreq.default_governor=performance "
                       "intel_idle.max_cstate=1\n")
    return grub, cmdline


def test_check_apply_check_apply(grub_files):
    grub, cmdline = grub_files
    original = grub.read_text()
    args = {"path": str(grub), "proc_cmdline": str(cmdline), "arguments": SEED_004}

    first_check = run_module(MODULE, args, check=True)
    assert first_check["changed"] is True
    assert first_check["replaced"] == ["intel_idle.max_cstate=1 -> intel_idle.max_cstate=0"]
    assert "intel_idle.max_cstate=0" in first_check["diff"]["after"]
    assert grub.read_text() == original

    applied = run_module(MODULE, args)
    assert applied["changed"] is True
    assert applied["reboot_required"] is True
    assert applied["reboot_reasons"] == ["intel_idle.max_cstate=0 is not on the running kernel's command line"]
    assert (grub.parent / applied["backup_file"].split("/")[-1]).read_text() == original
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash cpufreq.default_governor=performance ' \
           'intel_idle.max_cstate=0"' in grub.read_text()
    assert 'GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"' in grub.read_text()

    second_check = run_module(MODULE, args, check=True)
    assert second_check["changed"] is False
    second_apply = run_module(MODULE, args)
    assert second_apply["changed"] is False
    # the file is right but the kernel has not booted with it yet
    assert second_apply["reboot_required"] is True

    cmdline.write_text(cmdline.read_text().replace("max_cstate=1", "max_cstate=0"))
    after_reboot = run_module(MODULE, args)
    assert after_reboot["changed"] is False and after_reboot["reboot_required"] is False


def test_remove_and_missing_file(tmp_path, grub_files):
    grub, cmdline = grub_files
    result = run_module(MODULE, {"path": str(grub), "proc_cmdline": str(cmdline), "remove": ["splash"]})
    assert result["removed"] == ["splash"] and "splash" not in result["cmdline"]
    fresh = tmp_path / "absent"
    created = run_module(MODULE, {"path": str(fresh), "arguments": {"nosmt": None}, "proc_cmdline": str(cmdline)})
    assert created["changed"] is True and fresh.read_text() == 'GRUB_CMDLINE_LINUX_DEFAULT="nosmt"\n'
    assert created["exists"] is False
    absent = tmp_path / "no-grub"
    skipped = run_module(MODULE, {"path": str(absent), "arguments": {"nosmt": None}, "create": False,
                                  "proc_cmdline": str(cmdline)})
    assert skipped["changed"] is False and skipped["exists"] is False and not absent.exists()
    assert skipped["reboot_reasons"] == ["nosmt is not on the running kernel's command line"]


def test_a_grub_d_override_is_reported(grub_files):
    grub, cmdline = grub_files
    drop_in = grub.parent / "grub.d"
    drop_in.mkdir()
    (drop_in / "50-cloudimg-settings.cfg").write_text('GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n')
    result = run_module(MODULE, {"path": str(grub), "proc_cmdline": str(cmdline), "arguments": SEED_004})
    assert result["overridden_by"] == [str(drop_in / "50-cloudimg-settings.cfg")]
    assert any("override" in w for w in result["warnings"])


@pytest.mark.parametrize("bad", [{"arguments": {"a b": 1}}, {"arguments": {"x": 1}, "remove": ["x"]},
                                 {"variable": "1BAD"}])
def test_bad_input_fails_before_writing(grub_files, bad):
    grub, cmdline = grub_files
    before = grub.read_text()
    result = run_module(MODULE, {"path": str(grub), "proc_cmdline": str(cmdline), **bad})
    assert result["failed"] is True
    assert grub.read_text() == before
