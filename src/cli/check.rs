//! `check`: the schema validator, for deploy scripts.

use std::process::ExitCode;

use synckit_awareness::validate_schema;

use super::connect::Target;
use super::failure::Failure;
use super::failure::PROBLEM;

pub(crate) async fn run(target: &Target) -> Result<ExitCode, Failure> {
    let mut conn = target.connect().await?;
    let report = validate_schema(&mut conn).await?;
    if report.is_ok() {
        println!("schema ok");
        return Ok(ExitCode::SUCCESS);
    }
    for difference in &report.differences {
        println!("{difference}");
    }
    eprintln!(
        "hint: {} difference(s); run `synckit-awareness migrate` (or `diesel migration run`)",
        report.differences.len()
    );
    Ok(ExitCode::from(PROBLEM))
}
