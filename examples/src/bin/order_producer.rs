//! `taskq-order-producer --broker URL --order N [--outbox postgres://…] [--hold]`: what a
//! handler that takes an order does with taskq. It writes the order and enqueues its receipt
//! (`demo.sleep`, recorded in `--ledger`) in one PostgreSQL transaction, then commits: on a
//! PostgreSQL broker inside the broker's own database (`within`); on any other broker
//! through the outbox in `--outbox` (`via_outbox`), which a relay moves to the broker. With
//! `--hold` it stops before the commit and waits to be killed (the fault tests kill it
//! there: neither the order nor its task may remain).

use std::io::Write;

use clap::Parser;
use taskq::postgres::{
    pool_of, sqlx, EnqueueOutbox, EnqueueWithin, PostgresConfig, PostgresOutbox,
};

#[derive(Parser)]
struct Args {
    /// The broker URL; on PostgreSQL, `?schema=` names the schema of both taskq and the
    /// orders table.
    #[arg(long)]
    broker: String,
    /// The application's database and the schema of its outbox and orders table, for a
    /// broker other than PostgreSQL.
    #[arg(long)]
    outbox: Option<String>,
    /// The order's number.
    #[arg(long)]
    order: i64,
    /// The ledger file the receipt task writes to when it runs.
    #[arg(long)]
    ledger: String,
    /// Stop before the commit and wait to be killed.
    #[arg(long)]
    hold: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let client = taskq::connect(&args.broker).await?;
    let (pool, schema, outbox) = match &args.outbox {
        Some(url) => {
            let config = PostgresConfig::new(url)?;
            let outbox = PostgresOutbox::connect(config.clone()).await?;
            (
                outbox.pool().clone(),
                config.schema().to_owned(),
                Some(outbox),
            )
        }
        None => {
            let config = PostgresConfig::new(&args.broker)?;
            let pool = pool_of(&client).ok_or("not a PostgreSQL broker: pass --outbox")?;
            (pool.clone(), config.schema().to_owned(), None)
        }
    };
    let orders = format!("{schema}.orders");
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {orders} (id bigint PRIMARY KEY)"
    ))
    .execute(&pool)
    .await?;

    let mut tx = pool.begin().await?;
    sqlx::query(&format!("INSERT INTO {orders} (id) VALUES ($1)"))
        .bind(args.order)
        .execute(&mut *tx)
        .await?;
    let receipt = client.enqueue(taskq_examples::demo::Sleep {
        ms: 1,
        ledger: Some(args.ledger),
    });
    let receipt = match &outbox {
        Some(outbox) => receipt.via_outbox(outbox, &mut tx).await?,
        None => receipt.within(&mut tx).await?,
    };
    println!("written {}", receipt.id());
    std::io::stdout().flush()?;
    if args.hold {
        // Killed here, between the writes and the commit.
        std::future::pending::<()>().await;
    }
    tx.commit().await?;
    println!("committed {}", receipt.id());
    Ok(())
}
