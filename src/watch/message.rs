//! What an alert says, written once and shaped for each route: plain
//! text (mail, Slack, the terminal), Markdown (WeCom, DingTalk) and JSON.

use std::time::{Duration, UNIX_EPOCH};

use super::change::{Change, ChangeKind, Located};

/// The change's title: the name and what happened.
pub fn title(change: &Change) -> String {
    let what: Vec<&str> = change.kinds.iter().map(|kind| kind_phrase(*kind)).collect();
    format!("{}: {}", change.name, what.join(", "))
}

fn kind_phrase(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::AddressesChanged => "addresses changed",
        ChangeKind::PlacesChanged => "places changed",
        ChangeKind::ExpectationBroken => "expectation broken",
        ChangeKind::ExpectationRestored => "expectation met again",
        ChangeKind::Failing => "stopped resolving",
        ChangeKind::Recovered => "resolves again",
    }
}

/// When, as RFC 3339 in UTC.
pub fn when(change: &Change) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(change.at)).to_string()
}

/// The body as lines of "label: text".
pub fn lines(change: &Change) -> Vec<(&'static str, String)> {
    let mut lines = vec![("when", when(change))];
    if let Some(failure) = change.failure {
        let detail = if change.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", change.detail)
        };
        lines.push(("failure", format!("{}{detail}", failure.as_str())));
    }
    for (expectation, what) in &change.broken {
        lines.push(("broken", format!("{expectation}: {what}")));
    }
    if !change.restored.is_empty() {
        lines.push(("met again", change.restored.join(", ")));
    }
    let list = |addresses: &[Located]| {
        addresses
            .iter()
            .map(|located| format!("{} ({})", located.ip, located.place.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !change.added.is_empty() {
        lines.push(("added", list(&change.added)));
    }
    if !change.removed.is_empty() {
        lines.push(("removed", list(&change.removed)));
    }
    let places = |places: &[super::change::Place]| {
        places
            .iter()
            .map(|place| place.describe())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !change.places_added.is_empty() {
        lines.push(("new places", places(&change.places_added)));
    }
    if !change.places_removed.is_empty() {
        lines.push(("places gone", places(&change.places_removed)));
    }
    if !change.old.is_empty() {
        lines.push(("was", list(&change.old)));
    }
    if !change.new.is_empty() {
        lines.push(("now", list(&change.new)));
    }
    if change.chain.len() > 1 {
        lines.push(("chain", change.chain.join(" → ")));
    }
    lines
}

pub fn text(change: &Change) -> String {
    let mut text = title(change);
    for (label, line) in lines(change) {
        text.push_str(&format!("\n{label}: {line}"));
    }
    text
}

pub fn markdown(change: &Change) -> String {
    let mut text = format!("### {}\n", title(change));
    for (label, line) in lines(change) {
        text.push_str(&format!("\n- **{label}**: {line}"));
    }
    text
}

/// The generic webhook's body: the summary and the change itself.
pub fn json(change: &Change) -> serde_json::Value {
    serde_json::json!({
        "name": change.name,
        "title": title(change),
        "when": when(change),
        "text": text(change),
        "change": change,
    })
}
