//! Failures name what failed and where, in one line: an unreachable database, a schema that
//! is not migrated, a role without permission on the schema.

use taskq_postgres::{sqlx, PostgresBroker, PostgresConfig};

use super::support::server;

fn one_line(err: &taskq_core::Error) -> String {
    let line = taskq_core::error_chain(err);
    assert!(!line.contains('\n'), "not one line: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_named_with_its_url_and_the_likely_fix() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:secret@127.0.0.1:{port}/app");
    let err = PostgresBroker::connect(PostgresConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    let line = one_line(&err);
    assert!(err.is_transient(), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}/app")), "{line}");
    assert!(line.contains("is PostgreSQL running there?"), "{line}");
    assert!(!line.contains("secret"), "the password is masked: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_is_not_migrated_names_the_command_that_fixes_it() {
    let url = server().fresh_url();
    let err = PostgresBroker::connect(PostgresConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    let line = one_line(&err);
    assert!(line.contains("taskq postgres migrate"), "{line}");
    assert!(line.contains("migrate=auto"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_permission_on_the_schema_is_told_so() {
    let admin = sqlx::PgPool::connect(&server().url()).await.unwrap();
    let role = format!("r_{}", uuid_suffix());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&admin)
        .await
        .unwrap();
    // Migrated by the owner; the new role may not read it.
    let owner_url = format!("{}&migrate=auto", server().fresh_url());
    let owner = PostgresConfig::new(&owner_url).unwrap();
    PostgresBroker::connect(owner.clone()).await.unwrap();
    let as_role = owner_url
        .replace("postgres://postgres@", &format!("postgres://{role}@"))
        .replace("&migrate=auto", "");
    let err = PostgresBroker::connect(PostgresConfig::new(&as_role).unwrap())
        .await
        .unwrap_err();
    let line = one_line(&err);
    assert!(line.contains("permission denied"), "{line}");
    assert_eq!(
        line.matches("permission denied").count(),
        1,
        "said once: {line}"
    );
    assert!(line.contains(owner.schema()), "the schema is named: {line}");
    assert!(!err.is_transient(), "{line}");
}

fn uuid_suffix() -> String {
    format!(
        "{:08x}",
        std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos())
    )
}
