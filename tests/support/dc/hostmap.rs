//! `pkg/medusa/hostmap.go` (the restore host map's pairing) and `validateBackupForRestore`.

use std::collections::BTreeMap;

use super::{DcSpec, MedusaBackup};

/// `GetHostMap`'s pairing: racks sorted by name on both sides and paired positionally, hosts
/// within a rack sorted as strings and paired positionally. Returns (source, target) pairs.
pub fn pair_racks(
    source: &BTreeMap<String, Vec<String>>,
    dest: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(String, String)>, String> {
    // BTreeMap iteration is Go's sort.Strings order of the rack names.
    let sorted = |m: &BTreeMap<String, Vec<String>>| -> Vec<Vec<String>> {
        m.values()
            .map(|hosts| {
                let mut h = hosts.clone();
                h.sort();
                h
            })
            .collect()
    };
    let (src, dst) = (sorted(source), sorted(dest));
    if src.len() != dst.len() {
        return Err(format!("number of racks in source != racks in destination. Source: {source:?}, Dest: {dest:?}"));
    }
    let mut out = Vec::new();
    for (i, (rack, hosts)) in source.keys().zip(&src).enumerate() {
        for (j, host) in hosts.iter().enumerate() {
            let dest_rack = &dst[i];
            if j > dest_rack.len() {
                return Err(format!("number of nodes in source rack {rack} greater than number of nodes in dest rack"));
            }
            // The operator indexes without a bound check here (j == size panics).
            let target = dest_rack
                .get(j)
                .ok_or_else(|| format!("index out of range [{j}] in dest rack (the operator panics)"))?;
            out.push((host.clone(), target.clone()));
        }
    }
    Ok(out)
}

/// `validateBackupForRestore`.
pub fn validate_backup_for_restore(b: &MedusaBackup, dc: &DcSpec) -> Result<(), String> {
    if b.total_nodes == 0 && b.finished_nodes == 0 {
        return Ok(());
    }
    if b.finish_time == 0 {
        return Err("target backup has not finished".into());
    }
    if b.finished_nodes != b.total_nodes {
        return Err("target backup has not completed successfully".into());
    }
    if b.total_nodes as usize != dc.size() {
        return Err("node counts differ for source backup and destination datacenter".into());
    }
    let mut racks: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &b.nodes {
        if n.datacenter != dc.dc {
            return Err("target datacenter has different name than backup".into());
        }
        *racks.entry(n.rack.as_str()).or_default() += 1;
    }
    if !dc.racks.is_empty() {
        if racks.len() != dc.racks.len() {
            return Err("amount of racks must match in backup and target datacenter".into());
        }
        if dc.racks.iter().any(|r| !racks.contains_key(r.as_str())) {
            return Err("rack names must match in backup and target datacenter".into());
        }
    } else {
        if racks.len() > 1 {
            return Err("amount of racks must match in backup and target datacenter".into());
        }
        if b.nodes.first().is_some_and(|n| n.rack != "default") {
            return Err("rack names must match in backup and target datacenter".into());
        }
    }
    Ok(())
}
