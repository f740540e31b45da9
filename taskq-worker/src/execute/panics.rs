//! Where a task panicked. A panic's payload carries only its message; its location reaches
//! only the panic hook. So the worker installs a hook once (chained to the one installed
//! before it, which still prints as it did) that notes the location on the panicking thread,
//! and the run that caught the panic reads it there: a task's code panics inside the poll
//! that catches it, on the same thread. A hook the application installs later replaces this
//! one; the error then says the message alone.

use std::{cell::RefCell, sync::Once};

thread_local! {
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the location-noting hook (once per process).
pub(crate) fn note_locations() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                let at = format!("{}:{}:{}", at.file(), at.line(), at.column());
                LAST_LOCATION.with(|last| *last.borrow_mut() = Some(at));
            }
            previous(info);
        }));
    });
}

/// The location of the latest panic on this thread, taken (so a later panic without one
/// does not inherit it).
pub(crate) fn take_location() -> Option<String> {
    LAST_LOCATION.with(|last| last.borrow_mut().take())
}
