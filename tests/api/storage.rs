//! The schema: migrations, constraints and the shape of the lookup plan.

use xm_ip_service::data::store::{self, Table};

use crate::helpers::TestDb;

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let db = TestDb::new().await;
    assert_eq!(store::migrate(&db.url).await.unwrap(), 0);
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('ip_service_cn', 'ip_service_en', 'ip_service_v6')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn ranges_must_be_ordered_and_of_the_right_family() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for bad in [
        "INSERT INTO ip_service_cn (start_ip, end_ip) VALUES (10, 9)",
        "INSERT INTO ip_service_cn (start_ip, end_ip) VALUES (0, 4294967296)",
        "INSERT INTO ip_service_v6 (start_ip, end_ip) VALUES ('1.2.3.4', '1.2.3.5')",
        "INSERT INTO ip_service_v6 (start_ip, end_ip) VALUES ('240e::/16', '240e::1')",
        "INSERT INTO ip_service_v6 (start_ip, end_ip) VALUES ('240e::2', '240e::1')",
    ] {
        let err = client.batch_execute(bad).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{bad}: {err:?}"
        );
    }
}

/// EXPLAIN of the batch lookup on a table big enough for the planner to care.
async fn plan_of(db: &TestDb, table: Table, fill: &str, sample: &str) -> String {
    let client = db.client().await;
    client.batch_execute(fill).await.unwrap();
    client
        .batch_execute(&format!("ANALYZE {}", table.name()))
        .await
        .unwrap();
    let sql = store::lookup_sql(table).replace("$1", sample);
    let rows = client.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_lookup_is_an_index_probe_never_a_sequential_scan() {
    let db = TestDb::new().await;
    for table in [Table::Cn, Table::En] {
        let fill = format!(
            "INSERT INTO {} (start_ip, end_ip, country_name) \
             SELECT n * 256, n * 256 + 255, 'x' FROM generate_series(0::int8, 199999) n",
            table.name()
        );
        let plan = plan_of(&db, table, &fill, "'{16777216, 3074308195, 51200000}'").await;
        assert!(
            plan.contains(&format!("Index Scan Backward using {}_start_ip", table.name())),
            "{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
    let fill = "INSERT INTO ip_service_v6 (start_ip, end_ip, country_name) \
                SELECT ('2400::'::inet + n * 65536), ('2400::'::inet + (n * 65536 + 65535)), 'x' \
                FROM generate_series(0::int8, 199999) n";
    let plan = plan_of(&db, Table::V6, fill, "'{2400::1, 240e::1}'").await;
    assert!(
        plan.contains("Index Scan Backward using ip_service_v6_start_ip"),
        "{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test]
async fn the_value_columns_are_the_migrated_tables_columns_with_their_widths() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for table in Table::ALL {
        let rows = client
            .query(
                "SELECT column_name::text, character_maximum_length FROM information_schema.columns \
                 WHERE table_name = $1 AND data_type = 'character varying' ORDER BY column_name",
                &[&table.name()],
            )
            .await
            .unwrap();
        let mut schema: Vec<(String, usize)> = rows
            .iter()
            .map(|row| (row.get(0), row.get::<_, i32>(1) as usize))
            .collect();
        schema.sort();
        let mut declared: Vec<(String, usize)> = table
            .columns()
            .iter()
            .filter(|column| !column.number)
            .map(|column| (column.name.to_owned(), column.width))
            .collect();
        declared.sort();
        assert_eq!(declared, schema, "{}", table.name());
        let numbers: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = $1 AND data_type = 'bigint' AND column_name NOT IN ('id', 'start_ip', 'end_ip') \
                 ORDER BY column_name",
                &[&table.name()],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let declared: Vec<&str> = table.columns().iter().filter(|c| c.number).map(|c| c.name).collect();
        assert_eq!(numbers, declared, "{}", table.name());
    }
}
