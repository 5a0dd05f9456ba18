//! The `fwdwatch` operator CLI as a library: every subcommand's logic, so the
//! binary stays thin and tests drive the same code (e.g. [`up::Pipeline`]).

pub mod decide;
pub mod fleet;
pub mod inspect;
pub mod report;
pub mod report_output;
pub mod schedule_status;
pub mod up;
pub mod up_terminal;
