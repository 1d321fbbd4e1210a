//! `check`: the consistency checks over the range tables.

use std::convert::Infallible;

use crate::data::store::{self, Table};
use crate::tools::check::Checker;

/// Runs `check`: one line per problem on standard output, a count per
/// table on standard error. Whether every table was clean.
pub async fn check(database_url: &str, tables: &[Table]) -> anyhow::Result<bool> {
    let client = store::connect(database_url).await?;
    let tables = if tables.is_empty() { &Table::ALL[..] } else { tables };
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
    Ok(clean)
}
