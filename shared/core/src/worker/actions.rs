//! The steps of an update's one-off action (see [`crate::domain::day2`]):
//! the provider works out the units once, then each is started and waited
//! for in turn. The units and how many are done are recorded on the
//! operation together with the step, so a job delivered again resumes at
//! the unit it was on and never repeats one that finished.

use super::*;

impl Worker {
    pub(super) async fn action_step(
        &self,
        op: &mut Operation,
        ctx: &mut Context,
    ) -> Result<StepResult, StepError> {
        let cache = ctx.instance.cache_key().to_string();
        let Some(action) = ctx.action().cloned() else {
            // The update that asked for it was replaced: nothing to run.
            return Ok(StepResult::Next(Step::PutAlarms));
        };
        match op.step {
            Step::PlanAction => {
                if op.action_steps.is_empty() {
                    let units = self.provider.plan_action(&cache, &action).await?;
                    if units.is_empty() && action.may_find_nothing() {
                        return Ok(StepResult::Next(Step::PutAlarms));
                    }
                    if units.is_empty() {
                        return Err(StepError::Permanent(format!(
                            "the {} found nothing to act on: the cache has no nodes",
                            action.describe()
                        )));
                    }
                    info!(operation = %op.id, instance = %ctx.instance.id, action = %action.describe(),
                        units = units.len(), "action planned");
                    op.action_steps = units;
                    op.action_done = 0;
                }
                Ok(StepResult::Next(Step::StartAction))
            }
            Step::StartAction => {
                let Some(unit) = op.action_steps.get(op.action_done).cloned() else {
                    return Ok(StepResult::Next(Step::PutAlarms));
                };
                info!(operation = %op.id, instance = %ctx.instance.id, action = %action.describe(),
                    target = %unit.target, "starting the action on its next unit");
                match self.provider.start_action(&cache, &action, &unit).await? {
                    Progress::Done => Ok(StepResult::Next(Step::WaitAction)),
                    Progress::Working { detail } => {
                        Ok(StepResult::NextLater(Step::WaitAction, self.unit_detail(op, &action, &detail)))
                    }
                }
            }
            Step::WaitAction => {
                let Some(unit) = op.action_steps.get(op.action_done).cloned() else {
                    return Ok(StepResult::Next(Step::PutAlarms));
                };
                match self.provider.action_progress(&cache, &action, &unit).await? {
                    Progress::Done => {
                        info!(operation = %op.id, instance = %ctx.instance.id, action = %action.describe(),
                            target = %unit.target, "action done on this unit");
                        op.action_done += 1;
                        if op.action_done < op.action_steps.len() {
                            Ok(StepResult::Next(Step::StartAction))
                        } else {
                            Ok(StepResult::Next(Step::PutAlarms))
                        }
                    }
                    Progress::Working { detail } => {
                        Ok(StepResult::Wait(self.unit_detail(op, &action, &detail)))
                    }
                }
            }
            other => Err(StepError::Permanent(format!("step {other:?} is not an action's"))),
        }
    }

    /// A unit's progress as `last_operation` shows it: which of how many.
    fn unit_detail(&self, op: &Operation, action: &Action, detail: &str) -> String {
        if op.action_steps.len() > 1 {
            format!("{} {} of {}: {detail}", action.describe(), op.action_done + 1, op.action_steps.len())
        } else {
            format!("{}: {detail}", action.describe())
        }
    }
}
