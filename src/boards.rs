//! Board and HAT definitions, embedded in the binary from `boards/*.toml`.
//!
//! A board file says which BCM GPIOs a Pi model has on its 40-pin header, where each one is
//! on the header, and which default interface (I2C, SPI, UART, the HAT ID EEPROM) uses it, so
//! the config check can refuse a pin that does not exist and warn about one that is taken. A
//! HAT file names a relay board's channels: which GPIO drives each relay and at what level.
//! Each file also says where its pinout came from. The files are parsed once, on first use.

use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// Embeds `boards/<id>.toml` for each id, as `(id, text)`.
macro_rules! embed {
    ($($id:literal),* $(,)?) => {
        &[$(($id, include_str!(concat!("../boards/", $id, ".toml")))),*]
    };
}

/// Every definition file by id, embedded at build time. A file missing here is not shipped
/// (a test checks this list against the `boards/` directory).
const FILES: &[(&str, &str)] = embed![
    "pi3b",
    "pi3b-plus",
    "pi4b",
    "pi400",
    "pi5",
    "pizero2w",
    "pizerow",
    "waveshare-relay-3ch",
    "sbcomponents-pirelay-v2",
    "waveshare-relay-8ch",
];

/// BCM GPIO numbers run 0..=53 on every Pi.
const MAX_GPIO: u8 = 53;
/// The header has 40 pins.
const HEADER_PINS: u8 = 40;

/// A Raspberry Pi model's GPIO header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// Short name used in the config and on the command line (`pi4b`).
    pub id: String,
    /// Human name (`Raspberry Pi 4 Model B`).
    pub name: String,
    /// BCM GPIOs the agent may claim, ascending.
    pub gpio: Vec<u8>,
    /// `(gpio, physical header pin)` for every GPIO on the header, usable or not, ascending by
    /// GPIO; lets messages say where to connect a wire.
    pub header: Vec<(u8, u8)>,
    /// Pins a default interface uses; claiming one disables that interface.
    pub reserved: Vec<Reserved>,
    /// Model quirks worth knowing when wiring or deploying (SoC, GPIO chip naming).
    pub notes: Option<String>,
    /// Where the pinout came from (vendor and document).
    pub source: String,
}

/// A pin a default interface uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// BCM GPIO number.
    pub pin: u8,
    /// The interface and signal (`I2C1 SDA`), shown in warnings.
    pub function: String,
}

/// A relay board that plugs onto the header; read straight from its `[hat]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hat {
    /// Short name used in the config and on the command line.
    pub id: String,
    /// Human name, with the vendor.
    pub name: String,
    /// Where the pinout came from (vendor and document).
    pub source: String,
    /// The relays, ascending by channel number.
    pub channels: Vec<Channel>,
}

/// One relay of a HAT; in the file `{ channel = 1, gpio = 26, active = "low" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The channel number printed on the HAT (from 1).
    pub channel: u8,
    /// The BCM GPIO that drives it.
    #[serde(rename = "gpio")]
    pub pin: u8,
    /// True if a low pin switches the relay on.
    #[serde(rename = "active", deserialize_with = "active_low")]
    pub active_low: bool,
}

impl Board {
    /// True if the agent may claim `pin` on this board.
    pub fn has_gpio(&self, pin: u8) -> bool {
        self.gpio.contains(&pin)
    }

    /// The default interface using `pin`, if any.
    pub fn reserved_for(&self, pin: u8) -> Option<&str> {
        self.reserved
            .iter()
            .find(|r| r.pin == pin)
            .map(|r| r.function.as_str())
    }

    /// The physical header pin of BCM GPIO `pin`, if it is on the header.
    pub fn physical_pin(&self, pin: u8) -> Option<u8> {
        self.header.iter().find(|(g, _)| *g == pin).map(|(_, p)| *p)
    }
}

impl Hat {
    /// The relay with channel number `channel`, if the HAT has one.
    pub fn channel(&self, channel: u8) -> Option<&Channel> {
        self.channels.iter().find(|c| c.channel == channel)
    }
}

/// The board with this id.
pub fn board(id: &str) -> Option<&'static Board> {
    boards().iter().find(|b| b.id == id)
}

/// All known boards, in a stable order.
pub fn boards() -> &'static [Board] {
    &catalog().boards
}

/// The HAT with this id.
pub fn hat(id: &str) -> Option<&'static Hat> {
    hats().iter().find(|h| h.id == id)
}

/// All known HATs, in a stable order.
pub fn hats() -> &'static [Hat] {
    &catalog().hats
}

/// Text of `pimesh boards`: one line per board and HAT (id, kind, name).
pub fn list() -> String {
    let mut out = format!("{:<26} {:<6} NAME\n", "ID", "KIND");
    for b in boards() {
        let _ = writeln!(out, "{:<26} {:<6} {}", b.id, "board", b.name);
    }
    for h in hats() {
        let _ = writeln!(out, "{:<26} {:<6} {}", h.id, "hat", h.name);
    }
    out
}

/// Text of `pimesh boards NAME`: the board's GPIO table (gpio, physical pin, reserved-for) or the HAT's channels; None if unknown.
pub fn describe(id: &str) -> Option<String> {
    if let Some(b) = board(id) {
        let mut out = format!("{} ({}): board\nsource: {}\n", b.name, b.id, b.source);
        if let Some(notes) = &b.notes {
            let _ = writeln!(out, "notes: {notes}");
        }
        out.push_str("\nGPIO  PIN  RESERVED FOR\n");
        for &(gpio, physical) in &b.header {
            let mut function = b.reserved_for(gpio).unwrap_or("").to_string();
            if !b.has_gpio(gpio) {
                function.push_str(" (never claimed)");
            }
            let line = format!("{gpio:>4}  {physical:>3}  {function}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        return Some(out);
    }
    let h = hat(id)?;
    let mut out = format!("{} ({}): hat\nsource: {}\n", h.name, h.id, h.source);
    out.push_str("\nCHANNEL  GPIO  ACTIVE\n");
    for c in &h.channels {
        let level = if c.active_low { "low" } else { "high" };
        let _ = writeln!(out, "{:>7}  {:>4}  {level}", c.channel, c.pin);
    }
    Some(out)
}

/// Boards and HATs parsed from [`FILES`].
struct Catalog {
    /// Parsed boards, in file order.
    boards: Vec<Board>,
    /// Parsed HATs, in file order.
    hats: Vec<Hat>,
}

/// Parses every embedded file once. A broken file is a build bug that the tests catch; at
/// run time it is logged and skipped so the agent still starts with the others.
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut catalog = Catalog {
            boards: Vec::new(),
            hats: Vec::new(),
        };
        for (file, text) in FILES {
            match parse(file, text) {
                Ok(Def::Board(b)) => catalog.boards.push(b),
                Ok(Def::Hat(h)) => catalog.hats.push(h),
                Err(err) => tracing::error!(%err, "embedded board file skipped"),
            }
        }
        catalog
    })
}

/// Why an embedded definition file was rejected: not TOML, unknown fields, or inconsistent.
#[derive(Debug, thiserror::Error)]
#[error("boards/{file}.toml: {reason}")]
struct FileError {
    /// The file's id: its name under `boards/` without `.toml`.
    file: &'static str,
    /// What is wrong, with line and column for syntax errors.
    reason: String,
}

/// A parsed file: one board or one HAT.
enum Def {
    /// A `[board]` file.
    Board(Board),
    /// A `[hat]` file.
    Hat(Hat),
}

/// The layout of a definition file: exactly one of the two tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileDef {
    /// Present in board files.
    board: Option<BoardDef>,
    /// Present in HAT files.
    hat: Option<Hat>,
}

/// The `[board]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BoardDef {
    /// See [`Board::id`]; must equal the file name without `.toml`.
    id: String,
    /// See [`Board::name`].
    name: String,
    /// See [`Board::source`].
    source: String,
    /// See [`Board::notes`].
    notes: Option<String>,
    /// One entry per GPIO on the header.
    pins: Vec<PinDef>,
}

/// One GPIO of a board's header.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PinDef {
    /// BCM GPIO number.
    gpio: u8,
    /// Header pin number, 1 to 40.
    physical: u8,
    /// The default interface on this pin, if any.
    reserved: Option<String>,
    /// False for pins the agent must never claim (the HAT ID EEPROM).
    #[serde(default = "usable_default")]
    usable: bool,
}

/// Pins are usable unless a file says otherwise.
fn usable_default() -> bool {
    true
}

/// `active = "low" | "high"`: the pin level that switches a relay on.
#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ActiveLevel {
    /// A low pin switches the relay on.
    Low,
    /// A high pin switches the relay on.
    High,
}

/// Reads [`ActiveLevel`] into [`Channel::active_low`].
fn active_low<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(ActiveLevel::deserialize(d)? == ActiveLevel::Low)
}

/// Parses and checks one definition file; its id must be its file name, so ids are unique.
fn parse(file: &'static str, text: &str) -> Result<Def, FileError> {
    let invalid = |reason: String| FileError { file, reason };
    let def: FileDef = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let (id, def) = match (def.board, def.hat) {
        (Some(b), None) => (b.id.clone(), board_from(b).map(Def::Board)),
        (None, Some(h)) => (h.id.clone(), hat_from(h).map(Def::Hat)),
        _ => {
            return Err(invalid(
                "needs exactly one of a [board] or a [hat] table".into(),
            ))
        }
    };
    if id != file {
        return Err(invalid(format!("id {id:?} differs from the file name")));
    }
    def.map_err(invalid)
}

/// Checks a `[board]` table and builds the [`Board`].
fn board_from(def: BoardDef) -> Result<Board, String> {
    let mut pins = def.pins;
    pins.sort_by_key(|p| p.gpio);
    let (mut gpios, mut physical) = (HashSet::new(), HashSet::new());
    for p in &pins {
        if p.gpio > MAX_GPIO || !gpios.insert(p.gpio) {
            return Err(format!("GPIO{} does not exist or is listed twice", p.gpio));
        }
        if !(1..=HEADER_PINS).contains(&p.physical) || !physical.insert(p.physical) {
            return Err(format!(
                "GPIO{}: header pin {} is out of 1..={HEADER_PINS} or used twice",
                p.gpio, p.physical
            ));
        }
    }
    let reserved = pins.iter().filter_map(|p| {
        let function = p.reserved.clone()?;
        Some(Reserved {
            pin: p.gpio,
            function,
        })
    });
    Ok(Board {
        gpio: pins.iter().filter(|p| p.usable).map(|p| p.gpio).collect(),
        header: pins.iter().map(|p| (p.gpio, p.physical)).collect(),
        reserved: reserved.collect(),
        id: def.id,
        name: def.name,
        notes: def.notes,
        source: def.source,
    })
}

/// Checks a `[hat]` table and puts its channels in order.
fn hat_from(mut hat: Hat) -> Result<Hat, String> {
    hat.channels.sort_by_key(|c| c.channel);
    let (mut numbers, mut gpios) = (HashSet::new(), HashSet::new());
    for c in &hat.channels {
        if c.channel == 0 || !numbers.insert(c.channel) {
            return Err(format!("channel {} is 0 or listed twice", c.channel));
        }
        if c.pin > MAX_GPIO || !gpios.insert(c.pin) {
            return Err(format!(
                "channel {}: GPIO{} does not exist or drives two channels",
                c.channel, c.pin
            ));
        }
    }
    Ok(hat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line of `text` split into its words.
    fn rows(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    #[test]
    fn every_embedded_file_parses_and_every_file_in_the_directory_is_embedded() {
        for (file, text) in FILES {
            if let Err(err) = parse(file, text) {
                panic!("{err}");
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                continue; // `examples/`: instance configs, not board definitions
            }
            let name = entry.file_name().into_string().unwrap();
            let id = name.strip_suffix(".toml").unwrap();
            assert!(FILES.iter().any(|(f, _)| *f == id), "{name} not in FILES");
        }
        assert_eq!(boards().len() + hats().len(), FILES.len(), "none skipped");
    }

    #[test]
    fn every_required_board_has_gpio_2_to_27_and_the_same_header_as_the_pi4b() {
        let pi4b = board("pi4b").unwrap();
        assert_eq!(pi4b.gpio, (2..=27).collect::<Vec<u8>>());
        assert_eq!(pi4b.physical_pin(26), Some(37));
        assert_eq!(pi4b.physical_pin(0), Some(27));
        assert!(!pi4b.has_gpio(0) && !pi4b.has_gpio(1) && !pi4b.has_gpio(28));
        for id in "pi3b pi3b-plus pi4b pi400 pi5 pizero2w pizerow".split(' ') {
            let b = board(id).unwrap_or_else(|| panic!("board {id} missing"));
            let table = (&b.gpio, &b.header, &b.reserved);
            assert_eq!(table, (&pi4b.gpio, &pi4b.header, &pi4b.reserved), "{id}");
        }
        let pi5 = board("pi5").unwrap().notes.clone().unwrap();
        assert!(pi5.contains("RP1") && pi5.contains("gpiochip0"), "{pi5}");
        assert!(board("pi6").is_none());
    }

    #[test]
    fn default_interfaces_are_reserved_with_their_function() {
        let b = board("pi3b").unwrap();
        let reserved: Vec<u8> = b.reserved.iter().map(|r| r.pin).collect();
        assert_eq!(reserved, [0, 1, 2, 3, 7, 8, 9, 10, 11, 14, 15]);
        assert_eq!(b.reserved_for(2), Some("I2C1 SDA"));
        assert_eq!(b.reserved_for(3), Some("I2C1 SCL"));
        assert_eq!(b.reserved_for(14), Some("UART TXD"));
        assert_eq!(b.reserved_for(15), Some("UART RXD"));
        assert!(b.reserved_for(10).unwrap().starts_with("SPI0"));
        assert!(b.reserved_for(0).unwrap().contains("ID EEPROM"));
        assert_eq!(b.reserved_for(17), None);
    }

    #[test]
    fn hats_name_their_channels_and_every_channel_pin_is_usable_on_every_board() {
        let pins = |id| -> Vec<(u8, u8, bool)> {
            let h = hat(id).unwrap();
            h.channels
                .iter()
                .map(|c| (c.channel, c.pin, c.active_low))
                .collect()
        };
        let three = [(1, 26, true), (2, 20, true), (3, 21, true)];
        assert_eq!(pins("waveshare-relay-3ch"), three);
        let eight = [5, 6, 13, 16, 19, 20, 21, 26].map(|g| (g, true));
        let got: Vec<(u8, bool)> = pins("waveshare-relay-8ch")
            .iter()
            .map(|c| (c.1, c.2))
            .collect();
        assert_eq!(got, eight);
        let four = [(1, 19, false), (2, 13, false), (3, 6, false), (4, 5, false)];
        assert_eq!(pins("sbcomponents-pirelay-v2"), four);
        assert_eq!(
            hat("waveshare-relay-3ch").unwrap().channel(2).unwrap().pin,
            20
        );
        for h in hats() {
            assert!(!h.source.is_empty());
            for c in &h.channels {
                let everywhere = boards().iter().all(|b| b.has_gpio(c.pin));
                assert!(everywhere, "{} channel {}", h.id, c.channel);
            }
        }
    }

    #[test]
    fn list_and_describe_show_the_tables() {
        let list = list();
        let list = rows(&list);
        assert!(list.contains(&vec!["pi4b", "board", "Raspberry", "Pi", "4", "Model", "B"]));
        assert!(list
            .iter()
            .any(|r| r[..2] == ["waveshare-relay-3ch", "hat"]));
        assert_eq!(list.len(), 1 + FILES.len());

        let pi4b = describe("pi4b").unwrap();
        assert!(pi4b.contains("GPIO  PIN  RESERVED FOR"), "{pi4b}");
        assert!(
            rows(&pi4b).contains(&vec!["2", "3", "I2C1", "SDA"]),
            "{pi4b}"
        );
        assert!(rows(&pi4b).contains(&vec!["26", "37"]), "{pi4b}");
        assert!(describe("pi5").unwrap().contains("RP1"));

        let relay = describe("waveshare-relay-3ch").unwrap();
        assert!(rows(&relay).contains(&vec!["1", "26", "low"]), "{relay}");
        assert!(relay.contains("Waveshare"));
        assert_eq!(describe("nope"), None);
    }

    #[test]
    fn malformed_files_are_rejected_with_the_file_name() {
        let err = |text: &str| parse("x", text).err().unwrap().to_string();
        let head = "id = \"x\"\nname = \"X\"\nsource = \"s\"\n";
        let unknown = format!("[board]\n{head}colour = 1\npins = []\n");
        assert!(err(&unknown).contains("colour"));
        let twice = format!(
            "[board]\n{head}pins = [{{ gpio = 4, physical = 7 }}, {{ gpio = 4, physical = 8 }}]"
        );
        assert!(err(&twice).contains("boards/x.toml: GPIO4 does not exist or is listed twice"));
        let hat = format!("[hat]\n{head}channels = [{{ channel = 1, gpio = 4, active = \"on\" }}]");
        assert!(err(&hat).contains("low"), "{}", err(&hat));
        let renamed = head.replace("\"x\"", "\"y\"");
        assert!(
            err(&format!("[hat]\n{renamed}channels = []")).contains("differs from the file name")
        );
        assert!(err("").contains("exactly one of"));
    }
}
