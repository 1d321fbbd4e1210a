//! `check`: the consistency checks over the range tables, and the
//! corrections that the tables now agree with.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::SystemTime;

use tokio_postgres::Client;

use crate::data::corrections::{ip_number, Correction};
use crate::data::store::{self, Table, OVERRIDES};
use crate::domain::{Family, Place, TableLang};
use crate::tools::check::{agrees_with_source, Checker};

/// Runs `check`: one line per problem on standard output, a count per
/// table on standard error, then (checking every table) a line for each
/// correction the table underneath now agrees with, which can go. Whether
/// every table was clean.
pub async fn check(database_url: &str, tables: &[Table]) -> anyhow::Result<bool> {
    let client = store::connect(database_url).await?;
    let all = tables.is_empty();
    let tables = if all { &Table::ALL[..] } else { tables };
    let mut clean = true;
    for &table in tables {
        let mut checker = Checker::new(table);
        let copy = client.copy_out(&store::copy_rows_sql(table)).await?;
        store::visit_rows(copy, table, |start, end, fields| {
            checker.row(start, end, fields);
            Ok::<_, Infallible>(())
        })
        .await?;
        for line in &checker.problems {
            println!("{line}");
        }
        let unlisted = checker.found - checker.problems.len() as u64;
        if unlisted > 0 {
            println!("{}: {unlisted} more problems not listed", table.name());
        }
        eprintln!("{}: {} rows, {} problems", table.name(), checker.rows, checker.found);
        clean &= checker.found == 0;
    }
    if all {
        redundant_corrections(&client).await?;
    }
    Ok(clean)
}

/// One line per correction in force whose table says the same
/// throughout its range.
async fn redundant_corrections(client: &Client) -> anyhow::Result<()> {
    let (rows, _) = store::load_corrections(client).await?;
    let now = SystemTime::now();
    let mut redundant = 0;
    let in_force: Vec<&Correction> = rows.iter().filter(|c| c.in_force(now)).collect();
    for correction in &in_force {
        let Some(table) = source_of(correction) else { continue };
        if agrees_with_source(correction, &covering(client, table, correction).await?) {
            redundant += 1;
            println!(
                "{OVERRIDES} {}: {} now says the same throughout; the correction can go",
                correction.describe(),
                table.name()
            );
        }
    }
    eprintln!(
        "{OVERRIDES}: {} corrections in force, {redundant} agreeing with the table underneath",
        in_force.len()
    );
    Ok(())
}

/// The table a correction corrects answers of (none for English IPv6,
/// which only MaxMind answers).
fn source_of(correction: &Correction) -> Option<Table> {
    match (correction.lang, correction.family()) {
        (TableLang::ZhCn, Family::V4) => Some(Table::Cn),
        (TableLang::En, Family::V4) => Some(Table::En),
        (TableLang::ZhCn, Family::V6) => Some(Table::V6),
        (TableLang::En, Family::V6) => None,
    }
}

/// `table`'s rows overlapping the correction's range, in address order.
async fn covering(client: &Client, table: Table, correction: &Correction) -> anyhow::Result<Vec<(u128, u128, Place)>> {
    let columns = store::place_columns("");
    // Bounds as inet for both families, compared as the table stores them.
    let (bounds, at) = match table.family() {
        Family::V4 => (
            "'0.0.0.0'::inet + start_ip, '0.0.0.0'::inet + end_ip",
            "$1::inet - '0.0.0.0'::inet",
        ),
        Family::V6 => ("start_ip, end_ip", "$1::inet"),
    };
    let sql = format!(
        "SELECT {bounds}, {columns} FROM {} WHERE start_ip <= {} AND end_ip >= {} ORDER BY start_ip LIMIT 10000",
        table.name(),
        at.replace("$1", "$2"),
        at
    );
    let rows = client.query(&sql, &[&correction.start, &correction.end]).await?;
    rows.iter()
        .map(|row| {
            let values: [&str; 8] = std::array::from_fn(|i| row.get(2 + i));
            let (start, end): (IpAddr, IpAddr) = (row.try_get(0)?, row.try_get(1)?);
            Ok((ip_number(start), ip_number(end), Place::from_columns(values)))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(Into::into)
}
