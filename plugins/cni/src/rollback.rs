//! Undoing a half-made ADD: every step that makes something pushes what undoes it; an ADD
//! that fails (by `?` or otherwise) runs them in reverse order, one that completes keeps what
//! it made. The reference plugins write an `if err != nil { ... }` block per plugin; this is
//! that block, once.

use crate::error::CniResult;

type Step<'a> = Box<dyn FnOnce() -> CniResult<()> + 'a>;

/// What undoes the ADD so far, run in reverse order when dropped, unless
/// [`Rollback::commit`] was called first.
///
/// Declare it after what its steps borrow (the request, the namespace), so it is dropped, and
/// its steps run, while those still exist; the compiler insists.
#[must_use = "dropping it at once undoes what was pushed"]
pub struct Rollback<'a> {
    steps: Vec<(&'static str, Step<'a>)>,
}

impl<'a> Rollback<'a> {
    pub fn new() -> Rollback<'a> {
        Rollback { steps: Vec::new() }
    }

    /// `undo` reverses what was just made (or is about to be: a step must succeed when there
    /// is nothing to undo); `what` names it in the log when it fails.
    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() -> CniResult<()> + 'a) {
        self.steps.push((what, Box::new(undo)));
    }

    /// The ADD succeeded: keep everything it made.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Default for Rollback<'_> {
    fn default() -> Self {
        Rollback::new()
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        // The ADD's own error is what the runtime needs to see: a step that fails is only
        // logged (stderr), and the steps before it still run.
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(e) = undo() {
                eprintln!("undoing a failed ADD: {what}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CniError, Code};
    use std::cell::RefCell;

    fn add(log: &RefCell<Vec<&'static str>>, fail_at_end: bool) -> CniResult<()> {
        let mut undo = Rollback::new();
        undo.push("first", || {
            log.borrow_mut().push("undo first");
            Ok(())
        });
        undo.push("second", || {
            log.borrow_mut().push("undo second");
            Err(CniError::new(Code::Kernel, "already half gone"))
        });
        undo.push("third", || {
            log.borrow_mut().push("undo third");
            Ok(())
        });
        if fail_at_end {
            return Err(CniError::new(Code::Kernel, "the last step failed"));
        }
        undo.commit();
        Ok(())
    }

    #[test]
    fn a_failed_add_is_undone_in_reverse_order_whatever_a_step_says() {
        let log = RefCell::new(Vec::new());
        assert!(add(&log, true).is_err());
        assert_eq!(*log.borrow(), ["undo third", "undo second", "undo first"]);
    }

    #[test]
    fn a_completed_add_keeps_what_it_made() {
        let log = RefCell::new(Vec::new());
        add(&log, false).unwrap();
        assert!(log.borrow().is_empty());
    }
}
