//! Pod networking: network namespaces and CNI plugins (ADD/DEL/CHECK).
