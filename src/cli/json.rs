//! The JSON shapes of `--json` output: stable snake_case names, states as the DOMAIN
//! names, RFC 3339 UTC times.

use crate::engine::{JobProgress, Summary};
use crate::fmt::rfc3339;
use crate::model::*;
use serde_json::{json, Value};

fn t(x: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    x.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

pub fn error(e: &Option<ErrorDetails>) -> Value {
    match e {
        Some(e) => json!({
            "code": e.code,
            "title": e.title,
            "message": e.message,
            "recommendations": e.recommendations,
        }),
        None => Value::Null,
    }
}

pub fn item(i: &Item, points: u64) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "cloud_service": i.cloud_service,
        "region": i.region,
        "os": i.os,
        "size": i.size,
        "power_state": i.power_state,
        "registration_state": i.registration_state,
        "protection_state": i.protection_state,
        "policy": i.policy,
        "last_backup_time": t(i.last_backup_time),
        "last_backup_status": i.last_backup_status,
        "recovery_points": points,
        "not_found": i.not_found,
        "purge_at": t(i.purge_at),
        "disks": i.disks.iter().map(|d| json!({"index": d.index, "name": d.name, "capacity": d.capacity})).collect::<Vec<_>>(),
        "last_error": error(&i.last_error),
    })
}

pub fn job(j: &Job, now: chrono::DateTime<chrono::Utc>, live: Option<&JobProgress>) -> Value {
    let (done, total) = match live {
        Some(p) => (p.bytes_done, p.bytes_total),
        None => (j.bytes_done, j.bytes_total),
    };
    let progress = if matches!(
        j.status,
        JobStatus::Completed | JobStatus::CompletedWithWarnings
    ) {
        100.0
    } else if total > 0 {
        ((done as f64 / total as f64) * 1000.0).round() / 10.0
    } else {
        0.0
    };
    json!({
        "id": j.id,
        "operation": j.operation,
        "item": j.item,
        "item_id": j.item_id,
        "status": j.status,
        "start_time": rfc3339(j.start_time),
        "end_time": t(j.end_time),
        "duration_seconds": (j.duration(now).num_milliseconds() as f64 / 1000.0),
        "progress": progress,
        "bytes_done": done,
        "bytes_total": total,
        "rate_bytes_per_second": live.map(|p| p.rate.round()),
        "is_user_triggered": j.is_user_triggered,
        "tasks": j.tasks.iter().map(|k| json!({
            "name": k.name,
            "status": k.status,
            "start_time": t(k.start_time),
            "end_time": t(k.end_time),
            "duration_seconds": match (k.start_time, k.end_time) {
                (Some(s), Some(e)) => json!((e - s).num_milliseconds() as f64 / 1000.0),
                (Some(s), None) => json!((now - s).num_milliseconds() as f64 / 1000.0),
                _ => Value::Null,
            },
            "bytes_done": k.bytes_done,
            "bytes_total": k.bytes_total,
        })).collect::<Vec<_>>(),
        "error": error(&j.error),
        "details": j.details,
    })
}

pub fn point(p: &RecoveryPoint, item: &Item, damaged: bool) -> Value {
    json!({
        "id": p.id,
        "item": item.qualified_name(),
        "item_id": p.item_id,
        "time": rfc3339(p.time),
        "scheduled_time": rfc3339(p.scheduled_time),
        "expiry": t(p.expiry),
        "kind": p.kind,
        "consistency": p.consistency,
        "logical_bytes": p.logical_bytes,
        "stored_bytes": p.stored_bytes,
        "disks": p.disks.iter().map(|d| json!({"index": d.index, "name": d.name, "capacity": d.capacity})).collect::<Vec<_>>(),
        "job_id": p.job_id,
        "damaged": damaged,
    })
}

pub fn summary(s: &Summary) -> Value {
    json!({
        "protected": s.protected,
        "registered": s.registered,
        "needs_attention": s.needs_attention,
        "jobs_24h": {
            "completed": s.jobs_24h.completed,
            "failed": s.jobs_24h.failed,
            "in_progress": s.jobs_24h.in_progress,
        },
        "storage": s.storage,
        "time": rfc3339(s.time),
    })
}
