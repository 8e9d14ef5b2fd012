//! The floor plan's rooms: where each room is drawn and which room a point lies in.
//!
//! A room laid out in `[[web.room]]` keeps its rectangle. Every other room is the box around
//! its objects' positions, with a margin, so a house without any layout still draws as rooms.
//! The page draws what this computes and a drop asks [`room_at`], so the drawing and the room
//! a moved object takes never disagree. Pure functions, tested without a server.

use crate::config::WebRoom;
use serde::Serialize;
use std::collections::BTreeMap;

/// Space around a room's objects, in the units of x and y.
pub const MARGIN: f64 = 1.0;

/// One room as the page draws it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Area {
    /// The room's name.
    pub room: String,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Laid out in the config rather than around the objects.
    pub fixed: bool,
}

impl Area {
    /// Whether the point lies inside (edges included).
    pub fn contains(&self, x: f64, y: f64) -> bool {
        x >= self.x && x <= self.x + self.width && y >= self.y && y <= self.y + self.height
    }
}

/// The rooms of a house whose objects are at `positions` (room, x, y): the fixed ones as
/// configured, the others around their objects; sorted by room name.
pub fn areas<'a>(
    positions: impl IntoIterator<Item = (&'a str, f64, f64)>,
    fixed: &[WebRoom],
) -> Vec<Area> {
    let mut boxes: BTreeMap<&str, (f64, f64, f64, f64)> = BTreeMap::new();
    for (room, x, y) in positions {
        if !x.is_finite() || !y.is_finite() || fixed.iter().any(|f| f.room == room) {
            continue;
        }
        let b = boxes.entry(room).or_insert((x, y, x, y));
        *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    let mut out: Vec<Area> = fixed
        .iter()
        .map(|f| Area {
            room: f.room.clone(),
            x: f.x,
            y: f.y,
            width: f.width,
            height: f.height,
            fixed: true,
        })
        .collect();
    out.extend(boxes.into_iter().map(|(room, (x0, y0, x1, y1))| Area {
        room: room.to_string(),
        x: x0 - MARGIN,
        y: y0 - MARGIN,
        width: x1 - x0 + 2.0 * MARGIN,
        height: y1 - y0 + 2.0 * MARGIN,
        fixed: false,
    }));
    out.sort_by(|a, b| a.room.cmp(&b.room));
    out
}

/// The room an object dropped at (x, y) goes to: a configured room containing the point,
/// else the smallest drawn room containing it; None outside every room (it keeps its own).
pub fn room_at(areas: &[Area], x: f64, y: f64) -> Option<&str> {
    if let Some(a) = areas.iter().find(|a| a.fixed && a.contains(x, y)) {
        return Some(&a.room);
    }
    areas
        .iter()
        .filter(|a| a.contains(x, y))
        .min_by(|a, b| (a.width * a.height).total_cmp(&(b.width * b.height)))
        .map(|a| a.room.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hall() -> WebRoom {
        WebRoom {
            room: "hall".into(),
            x: 0.0,
            y: 0.0,
            width: 10.0,
            height: 2.0,
        }
    }

    #[test]
    fn rooms_are_drawn_around_their_objects() {
        let got = areas(
            [
                ("kitchen", 2.0, 1.0),
                ("kitchen", 4.0, 3.0),
                ("bath", 8.0, 8.0),
            ],
            &[],
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].room, "bath");
        assert_eq!(
            (got[0].x, got[0].y, got[0].width, got[0].height),
            (7.0, 7.0, 2.0, 2.0)
        );
        assert_eq!(
            (got[1].x, got[1].y, got[1].width, got[1].height),
            (1.0, 0.0, 4.0, 4.0)
        );
        assert!(!got[1].fixed);
    }

    #[test]
    fn a_configured_room_keeps_its_rectangle_even_when_empty() {
        let got = areas([("hall", 50.0, 50.0), ("bath", f64::NAN, 1.0)], &[hall()]);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].width, got[0].height, got[0].fixed),
            (10.0, 2.0, true)
        );
    }

    #[test]
    fn a_drop_takes_the_room_it_lands_in() {
        let got = areas(
            [
                ("kitchen", 2.0, 1.0),
                ("big", 0.0, 0.0),
                ("big", 20.0, 20.0),
            ],
            &[hall()],
        );
        // The hall is configured and wins where it overlaps the others.
        assert_eq!(room_at(&got, 2.0, 1.0), Some("hall"));
        // Below the hall, the kitchen's box (1..3, 0..2) is smaller than "big" (-1..21).
        assert_eq!(room_at(&got, 2.5, 2.0), Some("hall"));
        assert_eq!(room_at(&got, 2.5, 2.5), Some("big"));
        let got = areas(
            [
                ("kitchen", 2.0, 1.0),
                ("big", 0.0, 0.0),
                ("big", 20.0, 20.0),
            ],
            &[],
        );
        assert_eq!(room_at(&got, 2.5, 1.5), Some("kitchen"));
        assert_eq!(room_at(&got, 100.0, 100.0), None);
    }
}
