//! Which machine this is, from the kernel's own description, and which backend `auto` picks.
//!
//! Everything here is a pure function of two texts, `/proc/device-tree/model` and
//! `/proc/cpuinfo`, so the decision is unit-tested with samples from each Pi instead of
//! needing one on the desk. The device-tree model is preferred: it names the exact board
//! ("Raspberry Pi 4 Model B Rev 1.4"); `cpuinfo` is the fallback for kernels without a device
//! tree in `/proc` (its `Model` line, or a Broadcom `Hardware` line on older 32-bit kernels).

use super::Backend;
use std::path::Path;

/// Where the device-tree model string lives, relative to the filesystem root.
pub const DEVICE_TREE_MODEL: &str = "proc/device-tree/model";
/// Where the CPU description lives, relative to the filesystem root.
pub const CPUINFO: &str = "proc/cpuinfo";

/// Broadcom SoC names that older kernels print as `Hardware` in `/proc/cpuinfo` on a Pi.
const PI_SOCS: [&str; 5] = ["BCM2835", "BCM2836", "BCM2837", "BCM2711", "BCM2712"];

/// What the kernel says this machine is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The model as the kernel names it, e.g. "Raspberry Pi 4 Model B Rev 1.4"; `None` when
    /// neither text names one (a PC, a container).
    pub model: Option<String>,
    /// Which file the model came from, for `pimesh doctor` to cite.
    pub source: &'static str,
    /// True when this is a Raspberry Pi, whose registers rppal can drive.
    pub is_pi: bool,
    /// The pimesh board id matching the model (see `pimesh boards`), when there is one.
    pub board: Option<&'static str>,
}

/// The backend `auto` resolves to, with the sentence that explains the choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// `Rppal` or `Cdev`; never `Auto` or `Sim`.
    pub backend: Backend,
    /// Why, in words for a log line or `pimesh doctor`.
    pub reason: String,
}

/// Reads the two texts under `root` (`/` on a real machine; a test directory in tests).
/// A missing or unreadable file counts as absent, which is the normal case off a Pi.
pub fn read_machine(root: &Path) -> Machine {
    let read = |rel: &str| std::fs::read(root.join(rel)).ok();
    let model = read(DEVICE_TREE_MODEL).map(|b| String::from_utf8_lossy(&b).into_owned());
    let cpuinfo = read(CPUINFO).map(|b| String::from_utf8_lossy(&b).into_owned());
    machine(model.as_deref(), cpuinfo.as_deref())
}

/// Identifies the machine from the device-tree model text and the cpuinfo text.
pub fn machine(device_tree_model: Option<&str>, cpuinfo: Option<&str>) -> Machine {
    // The device-tree string ends in a NUL byte; some tools add a newline.
    let dt = device_tree_model
        .map(|m| m.trim_end_matches(['\0', '\n', ' ']).trim())
        .filter(|m| !m.is_empty());
    if let Some(model) = dt {
        return Machine {
            is_pi: model.starts_with("Raspberry Pi"),
            board: board_id(model),
            model: Some(model.to_string()),
            source: "/proc/device-tree/model",
        };
    }
    let cpu_model = cpuinfo.and_then(|c| cpuinfo_field(c, "Model"));
    if let Some(model) = cpu_model {
        return Machine {
            is_pi: model.starts_with("Raspberry Pi"),
            board: board_id(model),
            model: Some(model.to_string()),
            source: "/proc/cpuinfo",
        };
    }
    let hardware = cpuinfo.and_then(|c| cpuinfo_field(c, "Hardware"));
    let soc_is_pi = hardware.is_some_and(|h| PI_SOCS.contains(&h));
    Machine {
        model: hardware
            .filter(|_| soc_is_pi)
            .map(|h| format!("a Raspberry Pi with a {h}")),
        source: "/proc/cpuinfo",
        is_pi: soc_is_pi,
        board: None,
    }
}

/// The value of the first `key : value` line of a cpuinfo text, if present and not empty.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        (k.trim() == key && !v.is_empty()).then_some(v)
    })
}

/// The pimesh board id for a kernel model string. The longer names come first so that
/// "Zero 2 W" is not read as "Zero W", nor "3 Model B Plus" as "3 Model B".
pub fn board_id(model: &str) -> Option<&'static str> {
    const MODELS: [(&str, &str); 7] = [
        ("Raspberry Pi 5 Model B", "pi5"),
        ("Raspberry Pi 400", "pi400"),
        ("Raspberry Pi 4 Model B", "pi4b"),
        ("Raspberry Pi 3 Model B Plus", "pi3b-plus"),
        ("Raspberry Pi 3 Model B", "pi3b"),
        ("Raspberry Pi Zero 2 W", "pizero2w"),
        ("Raspberry Pi Zero W", "pizerow"),
    ];
    MODELS
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map(|(_, id)| *id)
}

/// What `backend = "auto"` means on `machine`: rppal on a Raspberry Pi (register access keeps
/// outputs across an agent restart), the GPIO character device everywhere else.
pub fn choose(machine: &Machine) -> Choice {
    let named = machine.model.as_deref().unwrap_or("no model named");
    if machine.is_pi {
        Choice {
            backend: Backend::Rppal,
            reason: format!(
                "rppal: this is a Raspberry Pi ({named}, from {})",
                machine.source
            ),
        }
    } else {
        let what = match &machine.model {
            Some(model) => format!("{model}, from {}", machine.source),
            None => "neither /proc/device-tree/model nor /proc/cpuinfo names one".to_string(),
        };
        Choice {
            backend: Backend::Cdev,
            reason: format!(
                "cdev: not a Raspberry Pi ({what}); the Linux GPIO character device works on any board"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/cpuinfo` of a Pi 4 B on 64-bit Raspberry Pi OS (one core shown).
    const PI4_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000001a2b3c4d\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
    /// `/proc/cpuinfo` of a Pi 5 (no `Hardware` line on its kernel).
    const PI5_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd0b\n\nRevision\t: d04170\nSerial\t\t: 5c7b1a2e3f4d5e6f\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n";
    /// `/proc/cpuinfo` of a Pi 3 B on an old 32-bit kernel: only the SoC, no `Model`.
    const PI3_OLD_CPUINFO: &str =
        "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n\nHardware\t: BCM2837\nRevision\t: a02082\n";
    /// `/proc/cpuinfo` of an x86 PC.
    const PC_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz\nflags\t\t: fpu vme de\n";

    fn pi(dt: &str, cpuinfo: Option<&str>) -> Machine {
        machine(Some(dt), cpuinfo)
    }

    #[test]
    fn every_supported_pi_is_recognised_from_its_device_tree_model() {
        let cases = [
            ("Raspberry Pi 3 Model B Rev 1.2\0", "pi3b"),
            ("Raspberry Pi 3 Model B Plus Rev 1.3\0", "pi3b-plus"),
            ("Raspberry Pi 4 Model B Rev 1.4\0", "pi4b"),
            ("Raspberry Pi 400 Rev 1.0\0", "pi400"),
            ("Raspberry Pi 5 Model B Rev 1.0\0", "pi5"),
            ("Raspberry Pi Zero 2 W Rev 1.0\0", "pizero2w"),
            ("Raspberry Pi Zero W Rev 1.1\0", "pizerow"),
        ];
        for (text, board) in cases {
            let m = pi(text, Some(PI4_CPUINFO));
            assert!(m.is_pi, "{text}");
            assert_eq!(m.board, Some(board), "{text}");
            assert_eq!(m.source, "/proc/device-tree/model");
            assert_eq!(m.model.as_deref(), text.strip_suffix('\0'));
            assert!(
                crate::boards::board(board).is_some(),
                "{board} is a known board"
            );
            let choice = choose(&m);
            assert_eq!(choice.backend, Backend::Rppal, "{text}");
            assert!(choice.reason.starts_with("rppal: this is a Raspberry Pi ("));
        }
    }

    #[test]
    fn cpuinfo_is_the_fallback_when_there_is_no_device_tree_model() {
        let m = machine(None, Some(PI5_CPUINFO));
        assert_eq!(
            m,
            Machine {
                model: Some("Raspberry Pi 5 Model B Rev 1.0".into()),
                source: "/proc/cpuinfo",
                is_pi: true,
                board: Some("pi5"),
            }
        );
        let m = machine(Some("\0"), Some(PI4_CPUINFO));
        assert_eq!(
            m.board,
            Some("pi4b"),
            "an empty device-tree model is ignored"
        );

        let old = machine(None, Some(PI3_OLD_CPUINFO));
        assert!(old.is_pi);
        assert_eq!(old.model.as_deref(), Some("a Raspberry Pi with a BCM2837"));
        assert_eq!(old.board, None, "the SoC alone does not say which board");
        assert_eq!(choose(&old).backend, Backend::Rppal);
    }

    #[test]
    fn a_pc_and_another_arm_board_get_cdev_and_say_why() {
        let pc = machine(None, Some(PC_CPUINFO));
        assert!(!pc.is_pi);
        assert_eq!(pc.model, None);
        let choice = choose(&pc);
        assert_eq!(choice.backend, Backend::Cdev);
        assert_eq!(
            choice.reason,
            "cdev: not a Raspberry Pi (neither /proc/device-tree/model nor /proc/cpuinfo names one); \
             the Linux GPIO character device works on any board"
        );

        let rock = pi("Radxa ROCK 5B\0", Some("Hardware\t: Rockchip RK3588\n"));
        assert!(!rock.is_pi);
        assert_eq!(rock.board, None);
        let choice = choose(&rock);
        assert_eq!(choice.backend, Backend::Cdev);
        assert!(choice
            .reason
            .starts_with("cdev: not a Raspberry Pi (Radxa ROCK 5B, from /proc/device-tree/model)"));

        let nothing = machine(None, None);
        assert!(!nothing.is_pi);
        assert_eq!(choose(&nothing).backend, Backend::Cdev);
    }

    #[test]
    fn compute_modules_are_pis_without_a_header_board() {
        let cm4 = pi("Raspberry Pi Compute Module 4 Rev 1.0\0", None);
        assert!(cm4.is_pi);
        assert_eq!(cm4.board, None);
    }

    #[test]
    fn read_machine_reads_the_files_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read_machine(root.path()), machine(None, None));
        std::fs::create_dir_all(root.path().join("proc/device-tree")).unwrap();
        std::fs::write(
            root.path().join(DEVICE_TREE_MODEL),
            "Raspberry Pi 4 Model B Rev 1.5\0",
        )
        .unwrap();
        std::fs::write(root.path().join(CPUINFO), PC_CPUINFO).unwrap();
        let m = read_machine(root.path());
        assert_eq!(m.board, Some("pi4b"));
        assert!(m.is_pi);
    }
}
