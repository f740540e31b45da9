//! The [`TaskCatalog`](taskq_core::TaskCatalog) suite: declarations published by workers are
//! what by-name producers read, the latest publication of a name winning.

use std::time::Duration;

use taskq_core::{ArgumentShape, TaskDeclaration, TaskOptions};

use super::*;

pub async fn declarations_round_trip_and_the_latest_wins(broker: Shared) {
    let name = format!("suite.{}", queue());
    assert_eq!(broker.task_declaration(&name).await.unwrap(), None);
    let first = TaskDeclaration::new(
        &name,
        &TaskOptions::new()
            .with_queue("a")
            .with_max_retries(0)
            .with_expires(Duration::from_secs(90))
            .with_timeout(Duration::from_millis(1500))
            .with_arguments(ArgumentShape::new(&["to", "cc"], &["to"])),
    );
    let other = TaskDeclaration::new(format!("{name}.other"), &TaskOptions::new());
    broker
        .publish_tasks(&[first.clone(), other.clone()])
        .await
        .unwrap();
    assert_eq!(
        broker.task_declaration(&name).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        broker.task_declaration(&other.name).await.unwrap(),
        Some(other.clone())
    );
    let names = broker.task_names().await.unwrap();
    assert!(
        names.contains(&name) && names.contains(&other.name),
        "{names:?}"
    );
    assert!(
        names.windows(2).all(|pair| pair[0] < pair[1]),
        "sorted: {names:?}"
    );
    let second = TaskDeclaration::new(&name, &TaskOptions::new().with_queue("b"));
    broker
        .publish_tasks(std::slice::from_ref(&second))
        .await
        .unwrap();
    assert_eq!(broker.task_declaration(&name).await.unwrap(), Some(second));
    broker.publish_tasks(&[]).await.unwrap();
}
