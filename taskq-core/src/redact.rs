//! [`redacted_url`]: a URL fit for errors and logs, its passwords masked.

/// `url` with every password replaced by `***`, including one in a URL it carries in its query
/// (`amqp://…?results=redis://user:password@cache`), for messages and logs.
///
/// ```
/// use taskq_core::redacted_url;
/// assert_eq!(redacted_url("redis://taskq:s3cret@cache:6379/0"), "redis://taskq:***@cache:6379/0");
/// assert_eq!(redacted_url("redis://cache:6379"), "redis://cache:6379");
/// assert_eq!(
///     redacted_url("amqp://guest:guest@rabbit/%2f?results=redis://app:s3cret@cache:6379"),
///     "amqp://guest:***@rabbit/%2f?results=redis://app:***@cache:6379"
/// );
/// assert_eq!(redacted_url("postgres://app@db/app?schema=taskq"), "postgres://app@db/app?schema=taskq");
/// ```
pub fn redacted_url(url: &str) -> String {
    let mut shown = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        shown.push_str(head);
        // The user information ends at the last `@` before the path, query or fragment.
        let authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                match tail[..at].split_once(':') {
                    Some((user, _)) => {
                        shown.push_str(user);
                        shown.push_str(":***");
                    }
                    None => shown.push_str(&tail[..at]),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    shown.push_str(rest);
    shown
}
