//! `pimesh doctor`: what this machine is and what stands between pimesh and its hardware.
//!
//! It prints the detected model, the backend `auto` would pick and why, every GPIO chip with
//! its line names, the GPIO and serial device files this user may not open (with the command
//! that fixes it), and the serial ports present. It only reads: it never claims a line or
//! opens a serial port (opening one resets many Arduinos). Everything is read under a root
//! directory, `/` on a real machine, so tests can run it on a made-up machine; the parsing
//! and the permission rule are pure functions with unit tests.

use crate::cli::Exit;
use crate::hal::{cdev, detect};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Serial device name prefixes worth listing (the Pi's UARTs, PC UARTs, USB adapters).
const SERIAL_PREFIXES: [&str; 4] = ["ttyAMA", "ttyS", "ttyUSB", "ttyACM"];
/// The Pi's stable aliases for its UARTs.
const SERIAL_ALIASES: [&str; 2] = ["serial0", "serial1"];
/// GPIO device files that rppal opens, besides the chips.
const GPIO_MEM: [&str; 2] = ["gpiomem", "gpiomem0"];
/// Width at which line-name lists wrap.
const WIDTH: usize = 96;

/// Who is asking: the effective user and every group it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id and supplementary groups.
    pub groups: Vec<u32>,
}

/// Reads the effective uid and groups from a `/proc/self/status` text.
pub fn identity(status: &str) -> Option<Identity> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|n| n.parse::<u32>().ok())
            })
    };
    let uid = field("Uid:")?.nth(1)?;
    let mut groups: Vec<u32> = field("Gid:")?.nth(1).into_iter().collect();
    groups.extend(field("Groups:").into_iter().flatten());
    Some(Identity { uid, groups })
}

/// True if `who` may read and write a file with this mode and owner (root always may).
pub fn may_read_write(mode: u32, owner: u32, group: u32, who: &Identity) -> bool {
    let bits = if who.uid == 0 {
        return true;
    } else if who.uid == owner {
        (mode >> 6) & 0o7
    } else if who.groups.contains(&group) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & 0o6 == 0o6
}

/// The name of group `gid` in an `/etc/group` text.
pub fn group_name(etc_group: &str, gid: u32) -> Option<String> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == gid).then(|| name.to_string())
    })
}

/// The fix for a device file this user may not open: join the group that owns it.
pub fn advice(path: &str, group: &str) -> String {
    format!(
        "{path}: this user may not open it; add the user to the {group} group: \
         sudo usermod -aG {group} $USER, then log in again"
    )
}

/// Runs `pimesh doctor` on this machine (or under `root`, for tests) and prints the report.
pub fn run(root: Option<&Path>) -> Exit {
    let root = root.unwrap_or(Path::new("/"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let who = identity(&status).unwrap_or(Identity {
        uid: 0,
        groups: Vec::new(),
    });
    print!("{}", report(root, &who));
    Exit::Ok
}

/// The whole report for the machine under `root`, as seen by `who`.
pub fn report(root: &Path, who: &Identity) -> String {
    let mut out = String::from("pimesh doctor\n");
    machine(&mut out, root);
    let chips = chips(&mut out, root);
    permissions(&mut out, root, who, &chips);
    serial_ports(&mut out, root);
    out
}

/// The model, the matching board and the backend `auto` would use.
fn machine(out: &mut String, root: &Path) {
    let m = detect::read_machine(root);
    let choice = detect::choose(&m);
    out.push_str("\nMachine\n");
    match &m.model {
        Some(model) => {
            let _ = writeln!(out, "  model:   {model} (from {})", m.source);
        }
        None => out.push_str("  model:   not named by /proc/device-tree/model or /proc/cpuinfo\n"),
    }
    match m.board {
        Some(board) => {
            let _ = writeln!(out, "  board:   {board} (model = \"{board}\" in [board])");
        }
        None if m.is_pi => {
            out.push_str("  board:   no pimesh board file matches; `pimesh boards` lists them\n")
        }
        None => out.push_str("  board:   not a Raspberry Pi\n"),
    }
    let _ = writeln!(out, "  backend: \"auto\" would use {}", choice.reason);
    if m.is_pi {
        out.push_str(
            "           rppal is in maintenance-only mode since July 2025; backend = \"cdev\" is the \
             long-term path and works here too\n",
        );
    }
}

/// The `gpiochip*` files under `<root>/dev`, in name order.
fn chip_files(root: &Path) -> Vec<PathBuf> {
    let mut chips: Vec<PathBuf> = list_dev(root)
        .into_iter()
        .filter(|n| {
            n.strip_prefix("gpiochip")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| root.join("dev").join(n))
        .collect();
    chips.sort_by_key(|p| number_suffix(p));
    chips
}

/// The trailing number of a device name, for natural ordering (gpiochip2 before gpiochip10).
fn number_suffix(path: &Path) -> u32 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .chars()
        .rev()
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// Lists every GPIO chip with its named lines; returns the chip files for the permission check.
fn chips(out: &mut String, root: &Path) -> Vec<PathBuf> {
    out.push_str("\nGPIO chips\n");
    let files = chip_files(root);
    if files.is_empty() {
        out.push_str(
            "  none: no /dev/gpiochip* here (not a board with GPIO, or a container without the \
             devices); backend = \"sim\" runs pimesh without GPIO\n",
        );
    }
    for file in &files {
        match cdev::chip_lines(file) {
            Ok(chip) => {
                let _ = writeln!(
                    out,
                    "  {}  {}, {} lines, {} named:",
                    file.display(),
                    chip.label,
                    chip.count,
                    chip.lines.len()
                );
                let names: Vec<&str> = chip.lines.iter().map(|l| l.name.as_str()).collect();
                wrap(out, &names);
            }
            Err(e) => {
                let _ = writeln!(out, "  {}  cannot be read: {e}", file.display());
            }
        }
    }
    files
}

/// Writes `words` indented and wrapped at [`WIDTH`].
fn wrap(out: &mut String, words: &[&str]) {
    let mut line = String::from("    ");
    for w in words {
        if line.len() + w.len() + 1 > WIDTH && !line.trim().is_empty() {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from("    ");
        }
        line.push_str(w);
        line.push(' ');
    }
    if !line.trim().is_empty() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Checks the GPIO device files (and the serial ports) this user must open.
fn permissions(out: &mut String, root: &Path, who: &Identity, chips: &[PathBuf]) {
    out.push_str("\nPermissions\n");
    let etc_group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let mut files: Vec<PathBuf> = GPIO_MEM.iter().map(|n| root.join("dev").join(n)).collect();
    files.extend(chips.iter().cloned());
    files.extend(serial_files(root).into_iter().map(|(path, _)| path));
    let mut checked = 0;
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        checked += 1;
        let shown = shown_path(root, &file);
        if may_read_write(meta.mode(), meta.uid(), meta.gid(), who) {
            let _ = writeln!(out, "  {shown}: ok");
        } else {
            let group =
                group_name(&etc_group, meta.gid()).unwrap_or_else(|| meta.gid().to_string());
            let _ = writeln!(out, "  {}", advice(&shown, &group));
        }
    }
    if checked == 0 {
        out.push_str("  nothing to check: no GPIO or serial device files\n");
    }
}

/// `path` as it is on the machine, without the test root.
fn shown_path(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// The names in `<root>/dev`.
fn list_dev(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("dev"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Serial device files under `<root>/dev` with what they are, in a stable order.
fn serial_files(root: &Path) -> Vec<(PathBuf, String)> {
    let names = list_dev(root);
    let mut found = Vec::new();
    for prefix in SERIAL_PREFIXES {
        let mut ports: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.strip_prefix(prefix)
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        ports.sort_by_key(|n| number_suffix(Path::new(n.as_str())));
        for p in ports {
            found.push((root.join("dev").join(p), String::new()));
        }
    }
    for alias in SERIAL_ALIASES {
        let path = root.join("dev").join(alias);
        if let Ok(target) = std::fs::read_link(&path) {
            let what = if alias == "serial0" {
                "the Pi's primary UART, on GPIO 14 and 15"
            } else {
                "the Pi's secondary UART, often Bluetooth"
            };
            found.push((path, format!(" -> {} ({what})", target.display())));
        }
    }
    found
}

/// Lists the serial ports; long runs of one kind (a PC's ttyS0-31) are folded into a range.
fn serial_ports(out: &mut String, root: &Path) {
    out.push_str("\nSerial ports\n");
    let files = serial_files(root);
    if files.is_empty() {
        out.push_str(
            "  none found (USB adapters appear as /dev/ttyUSB* or /dev/ttyACM* when plugged in)\n",
        );
        return;
    }
    for prefix in SERIAL_PREFIXES {
        let numbers: Vec<u32> = files
            .iter()
            .filter_map(|(p, _)| p.file_name()?.to_str()?.strip_prefix(prefix)?.parse().ok())
            .collect();
        match numbers.len() {
            0 => {}
            1..=4 => {
                for n in &numbers {
                    let _ = writeln!(out, "  /dev/{prefix}{n}");
                }
            }
            count => {
                let (first, last) = (numbers[0], numbers[count - 1]);
                let _ = writeln!(out, "  /dev/{prefix}{first}-{last} ({count} ports)");
            }
        }
    }
    for (path, note) in files.iter().filter(|(_, note)| !note.is_empty()) {
        let _ = writeln!(out, "  {}{note}", shown_path(root, path));
    }
    let by_id = root.join("dev/serial/by-id");
    if let Ok(dir) = std::fs::read_dir(&by_id) {
        let mut ids: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        for id in ids {
            let _ = writeln!(
                out,
                "  /dev/serial/by-id/{id} (a stable path for config: it survives replugging)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpimesh\nUmask:\t0022\nState:\tR (running)\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t4 20 27 997 \n";

    fn pi_user() -> Identity {
        identity(STATUS).unwrap()
    }

    #[test]
    fn the_identity_comes_from_proc_self_status() {
        assert_eq!(
            pi_user(),
            Identity {
                uid: 1000,
                groups: vec![1000, 4, 20, 27, 997]
            }
        );
        assert_eq!(identity("Name:\tx\n"), None);
    }

    #[test]
    fn access_follows_the_owner_group_and_other_bits() {
        let user = pi_user();
        assert!(may_read_write(0o660, 0, 997, &user), "member of gpio (997)");
        assert!(!may_read_write(
            0o660,
            0,
            20,
            &Identity {
                uid: 1001,
                groups: vec![1001]
            }
        ));
        assert!(!may_read_write(0o640, 0, 997, &user), "group may only read");
        assert!(may_read_write(0o600, 1000, 0, &user), "owner");
        assert!(may_read_write(0o666, 0, 0, &user), "everyone");
        assert!(
            may_read_write(
                0o000,
                5,
                5,
                &Identity {
                    uid: 0,
                    groups: vec![]
                }
            ),
            "root"
        );
    }

    #[test]
    fn the_fix_names_the_group_that_owns_the_file() {
        let etc_group = "root:x:0:\ndialout:x:20:pi\ngpio:x:997:pi,other\n";
        assert_eq!(group_name(etc_group, 997).as_deref(), Some("gpio"));
        assert_eq!(group_name(etc_group, 5), None);
        assert_eq!(
            advice("/dev/gpiochip0", "gpio"),
            "/dev/gpiochip0: this user may not open it; add the user to the gpio group: sudo usermod \
             -aG gpio $USER, then log in again"
        );
    }

    #[test]
    fn a_made_up_pi_is_reported_with_its_files() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("proc/device-tree")).unwrap();
        std::fs::create_dir_all(r.join("dev/serial/by-id")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join(detect::DEVICE_TREE_MODEL),
            "Raspberry Pi 5 Model B Rev 1.0\0",
        )
        .unwrap();
        for f in ["gpiomem0", "ttyAMA10", "ttyUSB0"] {
            std::fs::write(r.join("dev").join(f), "").unwrap();
        }
        std::os::unix::fs::symlink("ttyAMA0", r.join("dev/serial0")).unwrap();
        for n in 0..32 {
            std::fs::write(r.join("dev").join(format!("ttyS{n}")), "").unwrap();
        }
        std::os::unix::fs::symlink(
            "../../ttyUSB0",
            r.join("dev/serial/by-id/usb-Arduino_Uno-if00"),
        )
        .unwrap();
        let nobody = Identity {
            uid: 4242,
            groups: vec![4242],
        };
        let text = report(r, &nobody);
        assert!(
            text.contains("model:   Raspberry Pi 5 Model B Rev 1.0 (from /proc/device-tree/model)"),
            "{text}"
        );
        assert!(
            text.contains("board:   pi5 (model = \"pi5\" in [board])"),
            "{text}"
        );
        assert!(
            text.contains("backend: \"auto\" would use rppal: this is a Raspberry Pi"),
            "{text}"
        );
        assert!(
            text.contains("maintenance-only mode since July 2025"),
            "{text}"
        );
        assert!(
            text.contains("GPIO chips\n  none: no /dev/gpiochip*"),
            "{text}"
        );
        let mode = std::fs::metadata(r.join("dev/gpiomem0")).unwrap().mode();
        if !may_read_write(mode, 0, 0, &nobody) {
            assert!(
                text.contains("/dev/gpiomem0: this user may not open it; add the user to the"),
                "{text}"
            );
        }
        assert!(text.contains("  /dev/ttyAMA10\n"), "{text}");
        assert!(text.contains("  /dev/ttyUSB0\n"), "{text}");
        assert!(text.contains("  /dev/ttyS0-31 (32 ports)\n"), "{text}");
        assert!(
            text.contains("  /dev/serial0 -> ttyAMA0 (the Pi's primary UART, on GPIO 14 and 15)"),
            "{text}"
        );
        assert!(
            text.contains("/dev/serial/by-id/usb-Arduino_Uno-if00 (a stable path"),
            "{text}"
        );
    }
}
