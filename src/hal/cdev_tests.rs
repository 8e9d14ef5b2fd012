//! Tests of the cdev backend's pure parts: finding lines by name, and its error mapping.

use super::*;

fn entry(chip: &str, offset: u32, name: &str) -> LineEntry {
    LineEntry {
        chip: chip.into(),
        offset,
        name: name.into(),
    }
}

/// A Pi 5 as the kernel lists it since 2024: the header chip is gpiochip0 (RP1), and the
/// SoC's own chips carry other names.
fn pi5_lines() -> Vec<LineEntry> {
    let mut lines: Vec<LineEntry> = (0..28)
        .map(|n| entry("/dev/gpiochip0", n, &format!("GPIO{n}")))
        .collect();
    lines.push(entry("/dev/gpiochip0", 34, "PCIE_RP1_WAKE"));
    lines.push(entry("/dev/gpiochip10", 2, "RP1_SDA"));
    lines.push(entry("/dev/gpiochip11", 0, "RP1_RUN"));
    lines
}

#[test]
fn a_pin_is_found_by_name_on_whichever_chip_has_it() {
    let lines = pi5_lines();
    let l = find_line(&lines, &line_name(DEFAULT_LINE_PREFIX, 17)).unwrap();
    assert_eq!(l, &entry("/dev/gpiochip0", 17, "GPIO17"));

    // The same board before the 2024 renumbering: same names, chip 4.
    let old: Vec<LineEntry> = pi5_lines()
        .into_iter()
        .map(|mut l| {
            if l.chip == Path::new("/dev/gpiochip0") {
                l.chip = "/dev/gpiochip4".into();
            }
            l
        })
        .collect();
    let l = find_line(&old, "GPIO17").unwrap();
    assert_eq!(
        (l.chip.as_path(), l.offset),
        (Path::new("/dev/gpiochip4"), 17)
    );
}

#[test]
fn a_missing_name_and_a_name_on_two_chips_are_refused() {
    let mut lines = pi5_lines();
    assert_eq!(find_line(&lines, "GPIO40"), Err(LookupError::NotFound));
    assert_eq!(
        find_line(&lines, "gpio17"),
        Err(LookupError::NotFound),
        "names are exact"
    );
    lines.push(entry("/dev/gpiochip2", 5, "GPIO17"));
    match find_line(&lines, "GPIO17") {
        Err(LookupError::Ambiguous(a, b)) => {
            assert_eq!(a.chip, Path::new("/dev/gpiochip0"));
            assert_eq!(b.chip, Path::new("/dev/gpiochip2"));
        }
        other => panic!("expected ambiguous, got {other:?}"),
    }
}

#[test]
fn other_boards_use_their_own_prefix() {
    let lines = vec![
        entry("/dev/gpiochip1", 7, "PIN_7"),
        entry("/dev/gpiochip1", 8, "PIN_8"),
    ];
    let name = line_name("PIN_", 7);
    assert_eq!(find_line(&lines, &name).unwrap().offset, 7);
}

#[test]
fn lookup_errors_say_what_to_do() {
    let gpio = CdevGpio {
        lines: pi5_lines(),
        prefix: DEFAULT_LINE_PREFIX.into(),
        claimed: Arc::new(Mutex::new(HashSet::new())),
    };
    let text = gpio.claim(40).err().unwrap().to_string();
    assert!(text.contains("no GPIO line named \"GPIO40\""), "{text}");
    assert!(text.contains("line-prefix"), "{text}");
    let (held, _) = gpio.claim(17).unwrap();
    assert!(matches!(gpio.claim(17), Err(HalError::PinUsed { pin: 17 })));
    drop(held);
    assert!(gpio.claim(17).is_ok(), "released on drop");
}

#[test]
fn permission_and_busy_errors_are_recognised() {
    let line = entry("/dev/gpiochip0", 17, "GPIO17");
    let os = |n| gpiocdev::Error::from(std::io::Error::from_raw_os_error(n));
    let denied = line_error(17, &line, os(EACCES));
    assert!(denied.to_string().contains("`gpio` group"), "{denied}");
    assert!(matches!(
        line_error(17, &line, os(EBUSY)),
        HalError::LineBusy { pin: 17, .. }
    ));
    assert!(matches!(
        line_error(17, &line, os(5)),
        HalError::Cdev { pin: 17, .. }
    ));
    let chip = chip_error(Path::new("/dev/gpiochip0"), os(EPERM));
    assert!(matches!(chip, HalError::PermissionDenied { .. }));
}

#[test]
fn opening_without_chips_says_so_and_points_at_the_sim_backend() {
    if !chip_paths().is_empty() {
        return; // a machine with GPIO chips: opening may succeed
    }
    let err = CdevGpio::open(DEFAULT_LINE_PREFIX).err().unwrap();
    assert_eq!(err.kind(), super::super::ErrorKind::NoHardware);
    let text = err.to_string();
    assert!(text.contains("/dev/gpiochip"), "{text}");
    assert!(text.contains("backend = \"sim\""), "{text}");
}
