// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Owned} from "./Owned.sol";

/// @title AIConfig (lcw devnet)
/// @notice Governance parameters of the LightChain AI protocol, with the upstream ABI: the same
/// getters, setters and events. Every parameter is emitted once at construction, so an indexer that
/// starts at the deployment block sees the complete parameter history in events.
contract AIConfig is Owned {
    error FeeInvariantViolation(uint256 sum, uint256 expected);
    error ModelAlreadyEnabled(bytes32 modelId);
    error ModelAlreadyRegistered(bytes32 modelId);
    error ModelNotConfigured(bytes32 modelId);
    error ParameterOutOfBounds(string param, uint256 value, uint256 min, uint256 max);
    error RetentionInvariantViolation(uint256 retention, uint256 required);
    error ZeroAddress();
    // Declared for ABI parity with upstream (OZ Initializable/UUPS set); the devnet never throws them.
    error AddressEmptyCode(address target);
    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error FailedCall();
    error InvalidInitialization();
    error NotInitializing();
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);

    event DisputeParamsUpdated(uint256 bondMultiplier, uint256 window, uint256 resolutionTimeout);
    event ClaimWindowBlocksUpdated(uint256 value);
    event DispatcherAddressUpdated(address indexed newDispatcher);
    event DisputerAddressUpdated(address indexed newDisputer);
    event FeeDistributionUpdated(uint256 workerBps, uint256 protocolBps, uint256 feePoolBps);
    event InfraParamsUpdated(string param, uint256 value);
    event KeeperParamsUpdated(uint256 timeoutBountyBps, uint256 releaseBountyBps);
    event MaxConcurrentJobsUpdated(uint256 value);
    event MinWorkerStakeUpdated(uint256 newStake);
    event ModelConfigUpdated(bytes32 indexed modelId, uint256 fee, uint256 maxOutputTokens);
    event ModelDisabled(bytes32 indexed modelId);
    event ModelEnabled(bytes32 indexed modelId);
    event ModelRegistered(bytes32 indexed modelId, uint256 fee, uint256 maxOutputTokens);
    event SessionManagerAddressUpdated(address indexed value);
    event SlashingParamsUpdated(uint256 timeoutSlashBps, uint256 completionTimeoutSlashBps, uint256 disputeSlashBps);
    event SortitionEnabledUpdated(bool enabled);
    event SuspensionParamsUpdated(uint256 threshold, uint256 cooldown);
    // Declared for ABI parity with upstream; the devnet never emits them.
    event Initialized(uint64 version);
    event Upgraded(address indexed implementation);

    uint256 private constant BPS = 10_000;
    uint256 private constant NO_MAX = type(uint256).max;

    struct Model {
        uint256 fee;
        uint256 maxOutputTokens;
        bool registered;
        bool enabled;
    }

    // Timeouts and windows (seconds, except claimWindowBlocks).
    uint256 private ackTimeout = 90;
    uint256 private minAckTimeout = 1;
    uint256 private completionTimeout = 120;
    uint256 private disputeWindow = 24 hours;
    uint256 private minDisputeWindow = 1;
    uint256 private resolutionTimeout = 24 hours;
    uint256 private minResolutionTimeout = 1;
    uint256 private sessionInactivityTimeout = 1 hours;
    uint256 private blobRetentionPeriod = 18 days;
    uint256 private claimWindowBlocks = 10;
    // Fees and bounties (basis points).
    uint256 private workerFeeBps = 8_000;
    uint256 private protocolFeeBps = 1_500;
    uint256 private feePoolShareBps = 500;
    uint256 private releaseBountyBps = 100;
    uint256 private timeoutBountyBps = 1_000;
    // Slashing and disputes.
    uint256 private timeoutSlashBps = 200;
    uint256 private completionTimeoutSlashBps = 500;
    uint256 private disputeSlashBps = 1_500;
    uint256 private maxSlashBps = 5_000;
    uint256 private disputeBondMultiplier = 2;
    // Similarity (basis points).
    uint256 private similarityThreshold = 8_000;
    uint256 private canarySimilarityThreshold = 9_000;
    // Limits and sampling.
    uint256 private maxConcurrentJobs = 16;
    uint256 private maxReassignments = 3;
    uint256 private minWorkerStake = 5_000 ether;
    uint256 private samplingRateBps = 100;
    // Suspension.
    uint256 private suspensionCooldown = 24 hours;
    uint256 private suspensionThreshold = 3;
    // Roles.
    address private dispatcher;
    address private disputer;
    address private sessionManager;
    bool private sortitionEnabled;

    mapping(bytes32 => Model) private models;

    constructor(address initialOwner, address dispatcher_, address disputer_) Owned(initialOwner) {
        if (dispatcher_ == address(0) || disputer_ == address(0)) revert ZeroAddress();
        dispatcher = dispatcher_;
        disputer = disputer_;
        emit DispatcherAddressUpdated(dispatcher_);
        emit DisputerAddressUpdated(disputer_);
        emit DisputeParamsUpdated(disputeBondMultiplier, disputeWindow, resolutionTimeout);
        emit FeeDistributionUpdated(workerFeeBps, protocolFeeBps, feePoolShareBps);
        emit KeeperParamsUpdated(timeoutBountyBps, releaseBountyBps);
        emit SlashingParamsUpdated(timeoutSlashBps, completionTimeoutSlashBps, disputeSlashBps);
        emit SuspensionParamsUpdated(suspensionThreshold, suspensionCooldown);
        emit MinWorkerStakeUpdated(minWorkerStake);
        emit MaxConcurrentJobsUpdated(maxConcurrentJobs);
        emit ClaimWindowBlocksUpdated(claimWindowBlocks);
        emit InfraParamsUpdated("ackTimeout", ackTimeout);
        emit InfraParamsUpdated("minAckTimeout", minAckTimeout);
        emit InfraParamsUpdated("completionTimeout", completionTimeout);
        emit InfraParamsUpdated("minDisputeWindow", minDisputeWindow);
        emit InfraParamsUpdated("minResolutionTimeout", minResolutionTimeout);
        emit InfraParamsUpdated("sessionInactivityTimeout", sessionInactivityTimeout);
        emit InfraParamsUpdated("blobRetentionPeriod", blobRetentionPeriod);
        emit InfraParamsUpdated("maxSlashBps", maxSlashBps);
        emit InfraParamsUpdated("similarityThreshold", similarityThreshold);
        emit InfraParamsUpdated("canarySimilarityThreshold", canarySimilarityThreshold);
        emit InfraParamsUpdated("maxReassignments", maxReassignments);
        emit InfraParamsUpdated("samplingRateBps", samplingRateBps);
    }

    // ---------------------------------------------------------------- models

    function registerModel(bytes32 modelId, uint256 fee, uint256 maxOutputTokens) external onlyOwner {
        Model storage m = models[modelId];
        if (m.registered) revert ModelAlreadyRegistered(modelId);
        m.registered = true;
        m.enabled = true;
        m.fee = fee;
        m.maxOutputTokens = maxOutputTokens;
        emit ModelRegistered(modelId, fee, maxOutputTokens);
        emit ModelEnabled(modelId);
    }

    function enableModel(bytes32 modelId) external onlyOwner {
        Model storage m = _model(modelId);
        if (m.enabled) revert ModelAlreadyEnabled(modelId);
        m.enabled = true;
        emit ModelEnabled(modelId);
    }

    function disableModel(bytes32 modelId) external onlyOwner {
        _model(modelId).enabled = false;
        emit ModelDisabled(modelId);
    }

    function setModelFee(bytes32 modelId, uint256 fee) external onlyOwner {
        Model storage m = _model(modelId);
        m.fee = fee;
        emit ModelConfigUpdated(modelId, fee, m.maxOutputTokens);
    }

    function setModelMaxOutputTokens(bytes32 modelId, uint256 tokens) external onlyOwner {
        Model storage m = _model(modelId);
        m.maxOutputTokens = tokens;
        emit ModelConfigUpdated(modelId, m.fee, tokens);
    }

    function calculateJobFee(bytes32 modelId) external view returns (uint256) {
        return _modelView(modelId).fee;
    }

    function getModelFee(bytes32 modelId) external view returns (uint256) {
        return _modelView(modelId).fee;
    }

    function getModelMaxOutputTokens(bytes32 modelId) external view returns (uint256) {
        return _modelView(modelId).maxOutputTokens;
    }

    function isModelEnabled(bytes32 modelId) external view returns (bool) {
        Model storage m = models[modelId];
        return m.registered && m.enabled;
    }

    function _model(bytes32 modelId) private view returns (Model storage m) {
        m = models[modelId];
        if (!m.registered) revert ModelNotConfigured(modelId);
    }

    function _modelView(bytes32 modelId) private view returns (Model storage) {
        return _model(modelId);
    }

    // ---------------------------------------------------------------- timeouts and windows

    function setAckTimeout(uint256 timeout) external onlyOwner {
        if (timeout < minAckTimeout) revert ParameterOutOfBounds("ackTimeout", timeout, minAckTimeout, NO_MAX);
        ackTimeout = timeout;
        emit InfraParamsUpdated("ackTimeout", timeout);
    }

    function setMinAckTimeout(uint256 value) external onlyOwner {
        if (value == 0) revert ParameterOutOfBounds("minAckTimeout", value, 1, NO_MAX);
        minAckTimeout = value;
        emit InfraParamsUpdated("minAckTimeout", value);
    }

    function setCompletionTimeout(uint256 timeout) external onlyOwner {
        if (timeout == 0) revert ParameterOutOfBounds("completionTimeout", timeout, 1, NO_MAX);
        completionTimeout = timeout;
        emit InfraParamsUpdated("completionTimeout", timeout);
    }

    function setDisputeWindow(uint256 window) external onlyOwner {
        if (window < minDisputeWindow) {
            revert ParameterOutOfBounds("disputeWindow", window, minDisputeWindow, NO_MAX);
        }
        disputeWindow = window;
        emit DisputeParamsUpdated(disputeBondMultiplier, window, resolutionTimeout);
    }

    function setMinDisputeWindow(uint256 window) external onlyOwner {
        if (window == 0) revert ParameterOutOfBounds("minDisputeWindow", window, 1, NO_MAX);
        minDisputeWindow = window;
        emit InfraParamsUpdated("minDisputeWindow", window);
    }

    function setResolutionTimeout(uint256 timeout) external onlyOwner {
        if (timeout < minResolutionTimeout) {
            revert ParameterOutOfBounds("resolutionTimeout", timeout, minResolutionTimeout, NO_MAX);
        }
        resolutionTimeout = timeout;
        emit DisputeParamsUpdated(disputeBondMultiplier, disputeWindow, timeout);
    }

    function setMinResolutionTimeout(uint256 timeout) external onlyOwner {
        if (timeout == 0) revert ParameterOutOfBounds("minResolutionTimeout", timeout, 1, NO_MAX);
        minResolutionTimeout = timeout;
        emit InfraParamsUpdated("minResolutionTimeout", timeout);
    }

    function setSessionInactivityTimeout(uint256 timeout) external onlyOwner {
        sessionInactivityTimeout = timeout;
        emit InfraParamsUpdated("sessionInactivityTimeout", timeout);
    }

    /// @notice Blobs must outlive every dispute: the period covers the dispute window plus the
    /// resolution timeout.
    function setBlobRetentionPeriod(uint256 period) external onlyOwner {
        uint256 required = disputeWindow + resolutionTimeout;
        if (period < required) revert RetentionInvariantViolation(period, required);
        blobRetentionPeriod = period;
        emit InfraParamsUpdated("blobRetentionPeriod", period);
    }

    function setClaimWindowBlocks(uint256 value) external onlyOwner {
        claimWindowBlocks = value;
        emit ClaimWindowBlocksUpdated(value);
    }

    function getAckTimeout() external view returns (uint256) {
        return ackTimeout;
    }

    function getMinAckTimeout() external view returns (uint256) {
        return minAckTimeout;
    }

    function getCompletionTimeout() external view returns (uint256) {
        return completionTimeout;
    }

    function getDisputeWindow() external view returns (uint256) {
        return disputeWindow;
    }

    function getMinDisputeWindow() external view returns (uint256) {
        return minDisputeWindow;
    }

    function getResolutionTimeout() external view returns (uint256) {
        return resolutionTimeout;
    }

    function getMinResolutionTimeout() external view returns (uint256) {
        return minResolutionTimeout;
    }

    function getSessionInactivityTimeout() external view returns (uint256) {
        return sessionInactivityTimeout;
    }

    function getBlobRetentionPeriod() external view returns (uint256) {
        return blobRetentionPeriod;
    }

    function getClaimWindowBlocks() external view returns (uint256) {
        return claimWindowBlocks;
    }

    // ---------------------------------------------------------------- fees and bounties

    function setFeeDistribution(uint256 workerBps, uint256 protocolBps, uint256 feePoolBps) external onlyOwner {
        if (workerBps + protocolBps + feePoolBps != BPS) {
            revert FeeInvariantViolation(workerBps + protocolBps + feePoolBps, BPS);
        }
        workerFeeBps = workerBps;
        protocolFeeBps = protocolBps;
        feePoolShareBps = feePoolBps;
        emit FeeDistributionUpdated(workerBps, protocolBps, feePoolBps);
    }

    function setReleaseBountyBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("releaseBountyBps", bps, 0, BPS);
        releaseBountyBps = bps;
        emit KeeperParamsUpdated(timeoutBountyBps, bps);
    }

    function setTimeoutBountyBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("timeoutBountyBps", bps, 0, BPS);
        timeoutBountyBps = bps;
        emit KeeperParamsUpdated(bps, releaseBountyBps);
    }

    function getWorkerFeeBps() external view returns (uint256) {
        return workerFeeBps;
    }

    function getProtocolFeeBps() external view returns (uint256) {
        return protocolFeeBps;
    }

    function getFeePoolBps() external view returns (uint256) {
        return feePoolShareBps;
    }

    function getReleaseBountyBps() external view returns (uint256) {
        return releaseBountyBps;
    }

    function getTimeoutBountyBps() external view returns (uint256) {
        return timeoutBountyBps;
    }

    // ---------------------------------------------------------------- slashing and disputes

    function setTimeoutSlashBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("timeoutSlashBps", bps, 0, BPS);
        timeoutSlashBps = bps;
        emit SlashingParamsUpdated(bps, completionTimeoutSlashBps, disputeSlashBps);
    }

    function setCompletionTimeoutSlashBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("completionTimeoutSlashBps", bps, 0, BPS);
        completionTimeoutSlashBps = bps;
        emit SlashingParamsUpdated(timeoutSlashBps, bps, disputeSlashBps);
    }

    function setDisputeSlashBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("disputeSlashBps", bps, 0, BPS);
        disputeSlashBps = bps;
        emit SlashingParamsUpdated(timeoutSlashBps, completionTimeoutSlashBps, bps);
    }

    function setMaxSlashBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("maxSlashBps", bps, 0, BPS);
        maxSlashBps = bps;
        emit InfraParamsUpdated("maxSlashBps", bps);
    }

    function setDisputeBondMultiplier(uint256 multiplier) external onlyOwner {
        disputeBondMultiplier = multiplier;
        emit DisputeParamsUpdated(multiplier, disputeWindow, resolutionTimeout);
    }

    function getTimeoutSlashBps() external view returns (uint256) {
        return timeoutSlashBps;
    }

    function getCompletionTimeoutSlashBps() external view returns (uint256) {
        return completionTimeoutSlashBps;
    }

    function getDisputeSlashBps() external view returns (uint256) {
        return disputeSlashBps;
    }

    function getMaxSlashBps() external view returns (uint256) {
        return maxSlashBps;
    }

    function getDisputeBondMultiplier() external view returns (uint256) {
        return disputeBondMultiplier;
    }

    // ---------------------------------------------------------------- similarity

    function setSimilarityThreshold(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("similarityThreshold", bps, 0, BPS);
        similarityThreshold = bps;
        emit InfraParamsUpdated("similarityThreshold", bps);
    }

    function setCanarySimilarityThreshold(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("canarySimilarityThreshold", bps, 0, BPS);
        canarySimilarityThreshold = bps;
        emit InfraParamsUpdated("canarySimilarityThreshold", bps);
    }

    function getSimilarityThreshold() external view returns (uint256) {
        return similarityThreshold;
    }

    function getCanarySimilarityThreshold() external view returns (uint256) {
        return canarySimilarityThreshold;
    }

    // ---------------------------------------------------------------- limits and sampling

    function setMaxConcurrentJobs(uint256 value) external onlyOwner {
        maxConcurrentJobs = value;
        emit MaxConcurrentJobsUpdated(value);
    }

    function setMaxReassignments(uint256 max) external onlyOwner {
        maxReassignments = max;
        emit InfraParamsUpdated("maxReassignments", max);
    }

    function setMinWorkerStake(uint256 stake) external onlyOwner {
        minWorkerStake = stake;
        emit MinWorkerStakeUpdated(stake);
    }

    function setSamplingRateBps(uint256 bps) external onlyOwner {
        if (bps > BPS) revert ParameterOutOfBounds("samplingRateBps", bps, 0, BPS);
        samplingRateBps = bps;
        emit InfraParamsUpdated("samplingRateBps", bps);
    }

    function getMaxConcurrentJobs() external view returns (uint256) {
        return maxConcurrentJobs;
    }

    function getMaxReassignments() external view returns (uint256) {
        return maxReassignments;
    }

    function getMinWorkerStake() external view returns (uint256) {
        return minWorkerStake;
    }

    function getSamplingRateBps() external view returns (uint256) {
        return samplingRateBps;
    }

    // ---------------------------------------------------------------- suspension

    function setSuspensionCooldown(uint256 duration) external onlyOwner {
        suspensionCooldown = duration;
        emit SuspensionParamsUpdated(suspensionThreshold, duration);
    }

    function setSuspensionThreshold(uint256 count) external onlyOwner {
        if (count == 0) revert ParameterOutOfBounds("suspensionThreshold", count, 1, NO_MAX);
        suspensionThreshold = count;
        emit SuspensionParamsUpdated(count, suspensionCooldown);
    }

    function getSuspensionCooldown() external view returns (uint256) {
        return suspensionCooldown;
    }

    function getSuspensionThreshold() external view returns (uint256) {
        return suspensionThreshold;
    }

    // ---------------------------------------------------------------- roles

    function setDispatcherAddress(address value) external onlyOwner {
        if (value == address(0)) revert ZeroAddress();
        dispatcher = value;
        emit DispatcherAddressUpdated(value);
    }

    function setDisputerAddress(address value) external onlyOwner {
        if (value == address(0)) revert ZeroAddress();
        disputer = value;
        emit DisputerAddressUpdated(value);
    }

    function setSessionManagerAddress(address value) external onlyOwner {
        if (value == address(0)) revert ZeroAddress();
        sessionManager = value;
        emit SessionManagerAddressUpdated(value);
    }

    function setSortitionEnabled(bool enabled) external onlyOwner {
        sortitionEnabled = enabled;
        emit SortitionEnabledUpdated(enabled);
    }

    function getDispatcherAddress() external view returns (address) {
        return dispatcher;
    }

    function getDisputerAddress() external view returns (address) {
        return disputer;
    }

    function getSessionManagerAddress() external view returns (address) {
        return sessionManager;
    }

    function getSortitionEnabled() external view returns (bool) {
        return sortitionEnabled;
    }
}
